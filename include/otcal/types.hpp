#pragma once
#include <cstdint>
#include <string>

namespace otcal {

using index_t = std::int64_t;

enum class DType { float32, float64 };

inline std::size_t dtype_size(DType t) { return t == DType::float32 ? 4 : 8; }
inline const char* dtype_name(DType t) { return t == DType::float32 ? "float32" : "float64"; }

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::float32; }
template <>
constexpr DType dtype_of<double>() { return DType::float64; }

// Fixed reduction granule (docs/host-layer.md §6): every floating-point reduction over an axis is
// formed per block of R indices in a fixed order and merged in block order, so results do not
// depend on batch size or thread count.
inline constexpr index_t kReductionGranule = 256;

}  // namespace otcal
