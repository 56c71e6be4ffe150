#pragma once
// SciPy-compatible sparse .npz (scipy.sparse.save_npz layout, read by scipy.sparse.load_npz):
// a zip archive of indices.npy, indptr.npy, format.npy (0-d '<U3' "csr"), shape.npy (int64 [2])
// and data.npy. Entries are stored (no compression) with zlib's CRC32. Zip64 records are written
// when an entry or an offset passes 4 GiB, so plans of any size load.
#include <cstddef>
#include <string>

#include "otcal/communicator.hpp"
#include "otcal/csr.hpp"

namespace otcal::io {

struct NpzWriteOptions {
  // Write Zip64 extra fields for every entry even when nothing needs them (tests exercise the
  // Zip64 path this way without writing 4 GiB).
  bool force_zip64 = false;
};

// Values are written in m.dtype; indices as int32 or int64 as m.wide_indices() says; indptr int64.
// Throws InvalidArgument if the matrix is inconsistent (indptr length, nnz, index range).
void write_npz_csr(const std::string& path, const CsrMatrix& m, const NpzWriteOptions& options = {});

namespace detail {
// write_npz_csr's consistency checks (InvalidArgument).
void check_csr(const CsrMatrix& m);
}  // namespace detail

// ---- Several ranks (docs/sparsify.md "Distributed sparsify") ----------------------------------
// Each rank holds `local`: rows [row_offset, row_offset + local.rows) of the whole matrix, with its
// own indptr (local.indptr[0] = 0); the ranks' row ranges follow each other in rank order from 0.

inline constexpr std::size_t kDefaultPieceChunkBytes = std::size_t{16} << 20;

// Collective: rank 0 writes `path` (ignored elsewhere), byte for byte the file write_npz_csr writes
// for the whole matrix. Every rank sends its rows' bytes to rank 0 in order, in messages of at most
// `chunk_bytes`; rank 0 holds one such buffer, never another rank's rows. Each entry's CRC32 is
// combined from the ranks' CRCs of their parts (zlib crc32_combine), so nothing is sent twice.
// An error on any rank (an inconsistent matrix, a file rank 0 cannot write) is raised by every rank.
void write_npz_csr_sharded(const std::string& path, const CsrMatrix& local, index_t row_offset, Communicator& comm,
                           std::size_t chunk_bytes = kDefaultPieceChunkBytes);

// "plan.rank-0003-of-0004.npz" for stem "plan".
std::string piece_file_name(const std::string& stem, int rank, int ranks);
// "plan.manifest.json" for stem "plan".
std::string manifest_file_name(const std::string& stem);

// Collective: every rank writes DIR/<stem>.rank-RRRR-of-PPPP.npz (its rows as a SciPy CSR matrix of
// their own) and rank 0 DIR/<stem>.manifest.json (shape, nnz, dtype and each piece's file, rows and
// nnz). DIR must be the same folder for every rank (a shared filesystem).
void write_npz_csr_pieces(const std::string& dir, const std::string& stem, const CsrMatrix& local, index_t row_offset,
                          Communicator& comm);

// One process: the pieces a manifest names (paths relative to the manifest's folder) concatenated
// into `out`, byte for byte what write_npz_csr writes for the whole matrix. Streams the pieces
// twice (CRC32, then bytes) through a buffer of `chunk_bytes`. `what` names the manifest in errors.
void merge_npz_pieces(const std::string& manifest, const std::string& out, const std::string& what = "--manifest",
                      std::size_t chunk_bytes = kDefaultPieceChunkBytes);

}  // namespace otcal::io
