#pragma once
// SciPy-compatible sparse .npz (scipy.sparse.save_npz layout, read by scipy.sparse.load_npz):
// a zip archive of indices.npy, indptr.npy, format.npy (0-d '<U3' "csr"), shape.npy (int64 [2])
// and data.npy. Entries are stored (no compression) with zlib's CRC32. Zip64 records are written
// when an entry or an offset passes 4 GiB, so plans of any size load.
#include <string>

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

}  // namespace otcal::io
