#pragma once
// Reading a SciPy sparse .npz (scipy.sparse.save_npz, compressed or not) as the targets x records
// CSR that the calibrators take (`otcal calibrate --matrix`, docs/calibration.md "Inputs").
//
// The file holds a records x targets matrix M (microcalibrate's estimate_matrix orientation) in
// CSR or CSC with int32 or int64 indices and float32 or float64 data. A = Mᵀ is built while the
// zip entries are inflated, chunk by chunk, with no dense matrix and no copy of the file's arrays:
//   - CSC: M's column pointers and row indices are A's CSR arrays as they are;
//   - CSR: one counting-sort transpose, streamed twice (count per target, then place), so memory
//     beyond A is O(targets).
// Rows of A come out with ascending record indices (what the kernels need); duplicate entries of
// one (record, target) are summed, as scipy does when it multiplies.
#include <string>

#include "otcal/csr.hpp"

namespace otcal::io {

// Every problem (not a zip, not a sparse .npz, a format other than csr/csc, a dtype, a shape,
// indptr not monotone, an index out of range, a NaN or inf value) is an InvalidArgument naming
// `what` (e.g. "--matrix") and the path.
CsrMatrix read_estimate_matrix_npz(const std::string& path, const std::string& what);

}  // namespace otcal::io
