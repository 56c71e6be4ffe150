// The .npz piece reader of `otcal merge-plan` (io::merge_npz_pieces): arbitrary bytes as a piece
// file, named twice by a manifest (so both the first piece and a later one, whose indptr is shifted
// and loses its leading 0, are read), merged into one .npz.
// Input layout: rows (uint16, little-endian), nnz (uint16), then the piece file's bytes; the
// manifest claims those rows and entries per piece, so that well-formed pieces get past the count
// check to the merge itself.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "fuzz_support.hpp"
#include "io/npz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return -1;
  const unsigned rows = data[0] | (data[1] << 8u);
  const unsigned nnz = data[2] | (data[3] << 8u);
  otcal::fuzz::write_scratch_file("p.npz", reinterpret_cast<const char*>(data + 4), size - 4);
  const std::string manifest =
      "{\"format\": \"otcal csr pieces\", \"version\": 1, \"shape\": [" + std::to_string(2 * rows) +
      ", 7], \"nnz\": " + std::to_string(2 * nnz) + ", \"dtype\": \"float64\", \"index_dtype\": \"int32\"," +
      " \"pieces\": [{\"file\": \"p.npz\", \"rows\": [0, " + std::to_string(rows) + "], \"nnz\": " + std::to_string(nnz) +
      "}, {\"file\": \"p.npz\", \"rows\": [" + std::to_string(rows) + ", " + std::to_string(2 * rows) +
      "], \"nnz\": " + std::to_string(nnz) + "}]}";
  const std::string manifest_path = otcal::fuzz::write_scratch_file("plan.manifest.json", manifest.data(), manifest.size());
  const std::string out = (otcal::fuzz::scratch_dir() / "merged.npz").string();
  // Small chunks: the chunked paths (indptr shifted chunk by chunk) run on small inputs too.
  otcal::fuzz::expect_accept_or_refuse(
      [&] { otcal::io::merge_npz_pieces(manifest_path, out, "--manifest", 24); });
  return 0;
}
