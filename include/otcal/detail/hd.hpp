#pragma once
// OTCAL_HD marks element math shared by the CPU backend (g++) and the CUDA backend (nvcc).
#if defined(__CUDACC__)
#define OTCAL_HD __host__ __device__
#define OTCAL_INLINE __forceinline__
#else
#define OTCAL_HD
#define OTCAL_INLINE inline
#endif
