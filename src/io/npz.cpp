// SciPy sparse .npz writer: a stored (uncompressed) zip of .npy members, with Zip64 records
// (PKWARE APPNOTE 4.5.3) when a size or offset does not fit in 32 bits.
#include "io/npz.hpp"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "io/npy.hpp"
#include "io/zip.hpp"
#include "otcal/errors.hpp"

namespace otcal::io {
namespace {

using detail::ZipWriter;

}  // namespace

void detail::check_csr(const CsrMatrix& m) {
  const std::string where = "CSR matrix (" + std::to_string(m.rows) + " x " + std::to_string(m.cols) + ")";
  if (m.rows < 0 || m.cols < 0) throw InvalidArgument(where + ": negative shape");
  if (static_cast<index_t>(m.indptr.size()) != m.rows + 1)
    throw InvalidArgument(where + ": indptr has " + std::to_string(m.indptr.size()) + " entries, expected rows + 1");
  if (m.indptr.front() != 0) throw InvalidArgument(where + ": indptr[0] must be 0");
  for (index_t r = 0; r < m.rows; ++r)
    if (m.indptr[r + 1] < m.indptr[r]) throw InvalidArgument(where + ": indptr decreases at row " + std::to_string(r));
  const auto nnz = static_cast<std::size_t>(m.nnz());
  const std::size_t n_indices = m.wide_indices() ? m.indices64.size() : m.indices32.size();
  if (m.values.size() != nnz || n_indices != nnz)
    throw InvalidArgument(where + ": nnz " + std::to_string(nnz) + " but " + std::to_string(m.values.size()) +
                          " values and " + std::to_string(n_indices) + " indices (" +
                          (m.wide_indices() ? "int64" : "int32") + ")");
  for (std::size_t k = 0; k < nnz; ++k) {
    const std::int64_t c = m.index(static_cast<std::int64_t>(k));
    if (c < 0 || c >= m.cols) throw InvalidArgument(where + ": column index " + std::to_string(c) + " out of range");
  }
}

void write_npz_csr(const std::string& path, const CsrMatrix& m, const NpzWriteOptions& options) {
  detail::check_csr(m);
  const index_t nnz = m.nnz();
  const std::vector<std::int64_t> shape = {m.rows, m.cols};
  // scipy.sparse.save_npz member order.
  const std::pair<const char*, detail::NpyStream> members[5] = {
      {"indices.npy", m.wide_indices() ? detail::npy_stream(m.indices64.data(), {nnz})
                                       : detail::npy_stream(m.indices32.data(), {nnz})},
      {"indptr.npy", detail::npy_stream(m.indptr.data(), {m.rows + 1})},
      {"format.npy", detail::npy_stream_unicode_scalar("csr")},
      {"shape.npy", detail::npy_stream(shape.data(), {2})},
      {"data.npy", detail::npy_stream(m.values.data(), {nnz}, m.dtype)}};
  ZipWriter zip(path, options.force_zip64);
  for (const auto& entry : members) {
    // Named, not a structured binding: clang before 16 cannot capture those (the fuzz build).
    const auto& name = entry.first;
    const auto& stream = entry.second;
    // Two passes over the bytes, none held: CRC32 and size, then the bytes.
    const detail::ByteEmitter emit = [&](const detail::ByteSink& sink) {
      sink(stream.header.data(), stream.header.size());
      stream.emit(sink);
    };
    zip.add(name, detail::crc32_of(emit), stream.total_bytes(), emit);
  }
  zip.finish();
}

}  // namespace otcal::io
