// A CSR matrix held as row pieces (one per rank) written as the one SciPy .npz that write_npz_csr
// writes for the whole matrix: streamed from every rank to rank 0, or per-rank files + a manifest
// merged later (docs/sparsify.md "Distributed sparsify"). The .npz bytes are the npy header of
// each entry followed by the pieces' element bytes in row order; only indptr changes: a piece's
// entries are shifted by the nnz of the pieces before it and all but the first piece drop their
// leading 0. Each entry's CRC32 is crc32_combine of its parts' CRCs.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/collective.hpp"
#include "io/npy.hpp"
#include "io/npz.hpp"
#include "io/zip.hpp"
#include "otcal/errors.hpp"

namespace otcal::io {
namespace {

using detail::ByteEmitter;
using detail::ByteSink;

constexpr std::size_t kShiftChunk = 8192;  // indptr values shifted per step

// The streamed entries, in scipy.sparse.save_npz order: indices, indptr, (format, shape), data.
enum Part { kIndices = 0, kIndptr = 1, kData = 2, kParts = 3 };

// indptr[first .. count) + shift, emitted in chunks.
void emit_shifted(const std::int64_t* indptr, std::size_t first, std::size_t count, std::int64_t shift,
                  const ByteSink& sink) {
  std::vector<std::int64_t> buf;
  for (std::size_t k = first; k < count; k += kShiftChunk) {
    const std::size_t len = std::min(kShiftChunk, count - k);
    buf.assign(indptr + k, indptr + k + len);
    for (std::int64_t& v : buf) v += shift;
    sink(reinterpret_cast<const char*>(buf.data()), len * sizeof(std::int64_t));
  }
}

std::string index_descr(bool wide) { return wide ? "<i8" : "<i4"; }
std::string value_descr(DType d) { return d == DType::float32 ? "<f4" : "<f8"; }

// The npy header of a streamed entry of the whole matrix.
std::string part_header(Part part, index_t rows, std::int64_t nnz, bool wide, DType dtype) {
  switch (part) {
    case kIndices: return detail::npy_header(index_descr(wide), {nnz});
    case kIndptr: return detail::npy_header("<i8", {rows + 1});
    default: return detail::npy_header(value_descr(dtype), {nnz});
  }
}
const char* part_name(Part part) {
  return part == kIndices ? "indices.npy" : part == kIndptr ? "indptr.npy" : "data.npy";
}

// CRC32 of header followed by parts with the given CRCs and lengths.
std::uint32_t combined_crc(const std::string& header, const std::vector<std::uint32_t>& crcs,
                           const std::vector<std::uint64_t>& lengths) {
  uLong crc = crc32_z(crc32_z(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(header.data()), header.size());
  for (std::size_t k = 0; k < crcs.size(); ++k)
    if (lengths[k] > 0) crc = crc32_combine64(crc, crcs[k], static_cast<z_off64_t>(lengths[k]));
  return static_cast<std::uint32_t>(crc);
}

// The small entries every writer adds between indptr and data.
void add_format_and_shape(detail::ZipWriter& zip, index_t rows, index_t cols) {
  const std::vector<std::int64_t> shape = {rows, cols};
  const std::pair<const char*, detail::NpyStream> small[2] = {
      {"format.npy", detail::npy_stream_unicode_scalar("csr")}, {"shape.npy", detail::npy_stream(shape.data(), {2})}};
  for (const auto& entry : small) {
    // Named, not a structured binding: clang before 16 cannot capture those (the fuzz build).
    const auto& name = entry.first;
    const auto& stream = entry.second;
    const ByteEmitter emit = [&](const ByteSink& sink) {
      sink(stream.header.data(), stream.header.size());
      stream.emit(sink);
    };
    zip.add(name, detail::crc32_of(emit), stream.total_bytes(), emit);
  }
}

// ---- streamed to rank 0 ------------------------------------------------------------------------

// This rank's element bytes of each streamed entry.
struct LocalParts {
  ByteEmitter emit[kParts];
  std::uint64_t bytes[kParts] = {0, 0, 0};
};

LocalParts local_parts(const CsrMatrix& local, bool first_rank, std::int64_t nnz_before) {
  LocalParts p;
  const index_t nnz = local.nnz();
  const detail::NpyStream indices = local.wide_indices() ? detail::npy_stream(local.indices64.data(), {nnz})
                                                         : detail::npy_stream(local.indices32.data(), {nnz});
  const detail::NpyStream values = detail::npy_stream(local.values.data(), {nnz}, local.dtype);
  p.emit[kIndices] = indices.emit;
  p.bytes[kIndices] = indices.data_bytes;
  // The global indptr: rank 0 gives its leading 0, every rank its row ends shifted to global.
  const std::size_t first = first_rank ? 0 : 1;
  const std::size_t count = local.indptr.size();
  const std::int64_t* indptr = local.indptr.data();
  p.emit[kIndptr] = [=](const ByteSink& sink) { emit_shifted(indptr, first, count, nnz_before, sink); };
  p.bytes[kIndptr] = (count - first) * sizeof(std::int64_t);
  p.emit[kData] = values.emit;
  p.bytes[kData] = values.data_bytes;
  return p;
}

// Sends everything `emit` produces to `peer` in messages of exactly `chunk` bytes but the last.
void send_in_chunks(Communicator& comm, const ByteEmitter& emit, std::size_t chunk, int peer) {
  std::vector<char> buf(chunk);
  std::size_t fill = 0;
  emit([&](const char* p, std::size_t n) {
    while (n > 0) {
      const std::size_t take = std::min(n, chunk - fill);
      std::memcpy(buf.data() + fill, p, take);
      fill += take;
      p += take;
      n -= take;
      if (fill == chunk) {
        comm.send(buf.data(), fill, peer);
        fill = 0;
      }
    }
  });
  if (fill > 0) comm.send(buf.data(), fill, peer);
}

// The matching receives of `bytes` bytes from `peer`, passed on to the sink.
void receive_in_chunks(Communicator& comm, std::uint64_t bytes, std::vector<char>& buf, int peer,
                       const ByteSink& sink) {
  for (std::uint64_t left = bytes; left > 0;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
    comm.receive(buf.data(), n, peer);
    sink(buf.data(), n);
    left -= n;
  }
}

// One word per rank of each of these, in rank order.
struct RankTable {
  std::vector<std::uint64_t> rows, offset, nnz, kind, crc[kParts], bytes[kParts];
};

std::uint64_t kind_word(const CsrMatrix& m) {
  return (static_cast<std::uint64_t>(m.cols) << 8) | (m.dtype == DType::float32 ? 1u : 0u);
}

}  // namespace

void write_npz_csr_sharded(const std::string& path, const CsrMatrix& local, index_t row_offset, Communicator& comm,
                           std::size_t chunk_bytes) {
  if (chunk_bytes == 0) throw InvalidArgument("write_npz_csr_sharded: chunk_bytes must be > 0");
  const int rank = comm.rank(), ranks = comm.size();
  // Each rank checks its own piece (write_npz_csr's checks), agreed before anything is exchanged.
  otcal::detail::agreed(comm, [&] { detail::check_csr(local); });
  RankTable t;
  t.rows = comm.all_gather_word(static_cast<std::uint64_t>(local.rows));
  t.offset = comm.all_gather_word(static_cast<std::uint64_t>(row_offset));
  t.nnz = comm.all_gather_word(static_cast<std::uint64_t>(local.nnz()));
  t.kind = comm.all_gather_word(kind_word(local));
  std::int64_t nnz_before = 0, nnz_total = 0;
  index_t rows_total = 0;
  for (int r = 0; r < ranks; ++r) {
    if (t.offset[r] != static_cast<std::uint64_t>(rows_total))
      throw InvalidArgument("write_npz_csr_sharded: rank " + std::to_string(r) + " starts at row " +
                            std::to_string(t.offset[r]) + ", expected " + std::to_string(rows_total) +
                            " (the ranks' rows must follow each other in rank order)");
    if (t.kind[r] != t.kind[0])
      throw InvalidArgument("write_npz_csr_sharded: rank " + std::to_string(r) +
                            " holds a matrix of other columns or dtype than rank 0's");
    if (r < rank) nnz_before += static_cast<std::int64_t>(t.nnz[r]);
    nnz_total += static_cast<std::int64_t>(t.nnz[r]);
    rows_total += static_cast<index_t>(t.rows[r]);
  }
  const LocalParts mine = local_parts(local, rank == 0, nnz_before);
  for (int k = 0; k < kParts; ++k) {
    t.crc[k] = comm.all_gather_word(detail::crc32_of(mine.emit[k]));
    t.bytes[k] = comm.all_gather_word(mine.bytes[k]);
  }

  // Rank 0 opens the file; a failure there stops every rank before any bytes move.
  std::optional<detail::ZipWriter> zip;
  otcal::detail::agreed(comm, [&] {
    if (rank == 0) zip.emplace(path, false);
  });
  std::exception_ptr failure;
  if (rank == 0) {
    std::vector<char> buf(chunk_bytes);
    auto stream_part = [&](Part part) {
      const ByteEmitter remote_only = [&](const ByteSink& sink) {
        for (int r = 1; r < ranks; ++r) receive_in_chunks(comm, t.bytes[part][r], buf, r, sink);
      };
      if (failure) {  // drain, so that no rank is left waiting in a send
        remote_only([](const char*, std::size_t) {});
        return;
      }
      try {
        const std::string header = part_header(part, rows_total, nnz_total, local.wide_indices(), local.dtype);
        std::vector<std::uint32_t> crcs(t.crc[part].begin(), t.crc[part].end());
        std::uint64_t size = header.size();
        for (std::uint64_t b : t.bytes[part]) size += b;
        zip->add(part_name(part), combined_crc(header, crcs, t.bytes[part]), size, [&](const ByteSink& sink) {
          sink(header.data(), header.size());
          mine.emit[part](sink);
          remote_only(sink);
        });
      } catch (...) {
        failure = std::current_exception();
      }
    };
    stream_part(kIndices);
    stream_part(kIndptr);
    if (!failure) {
      try {
        add_format_and_shape(*zip, rows_total, local.cols);
      } catch (...) {
        failure = std::current_exception();
      }
    }
    stream_part(kData);
  } else {
    for (Part part : {kIndices, kIndptr, kData}) send_in_chunks(comm, mine.emit[part], chunk_bytes, 0);
  }
  otcal::detail::agreed(comm, [&] {
    if (failure) std::rethrow_exception(failure);
    if (zip) zip->finish();
  });
}

std::string piece_file_name(const std::string& stem, int rank, int ranks) {
  char buf[64];
  std::snprintf(buf, sizeof buf, ".rank-%04d-of-%04d.npz", rank, ranks);
  return stem + buf;
}

std::string manifest_file_name(const std::string& stem) { return stem + ".manifest.json"; }

void write_npz_csr_pieces(const std::string& dir, const std::string& stem, const CsrMatrix& local, index_t row_offset,
                          Communicator& comm) {
  const int rank = comm.rank(), ranks = comm.size();
  const std::string mine = piece_file_name(stem, rank, ranks);
  otcal::detail::agreed(comm, [&] { write_npz_csr((std::filesystem::path(dir) / mine).string(), local); });
  const std::vector<std::uint64_t> rows = comm.all_gather_word(static_cast<std::uint64_t>(local.rows));
  const std::vector<std::uint64_t> offsets = comm.all_gather_word(static_cast<std::uint64_t>(row_offset));
  const std::vector<std::uint64_t> nnz = comm.all_gather_word(static_cast<std::uint64_t>(local.nnz()));
  otcal::detail::agreed(comm, [&] {
    if (rank != 0) return;
    nlohmann::json j;
    j["format"] = "otcal csr pieces";
    j["version"] = 1;
    std::uint64_t rows_total = 0, nnz_total = 0;
    nlohmann::json pieces = nlohmann::json::array();
    for (int r = 0; r < ranks; ++r) {
      pieces.push_back({{"file", piece_file_name(stem, r, ranks)},
                        {"rows", {offsets[r], offsets[r] + rows[r]}},
                        {"nnz", nnz[r]}});
      rows_total += rows[r];
      nnz_total += nnz[r];
    }
    j["shape"] = {rows_total, local.cols};
    j["nnz"] = nnz_total;
    j["dtype"] = dtype_name(local.dtype);
    j["index_dtype"] = local.wide_indices() ? "int64" : "int32";
    j["pieces"] = pieces;
    j["merge"] = "otcal merge-plan --manifest " + manifest_file_name(stem) + " --out " + stem + ".npz";
    const std::string path = (std::filesystem::path(dir) / manifest_file_name(stem)).string();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << j.dump(2) << "\n";
    out.flush();
    if (!out) throw InvalidArgument("cannot write '" + path + "'");
  });
}

// ---- merging per-rank files --------------------------------------------------------------------
namespace {

// Where the element bytes of one .npy entry of a stored zip lie.
struct NpyRegion {
  std::uint64_t offset = 0, bytes = 0;
  std::string descr;
  std::int64_t count = 0;
};

struct PieceFile {
  std::string path;
  NpyRegion part[kParts];
};

std::uint64_t le(const unsigned char* p, int n) {
  std::uint64_t v = 0;
  for (int k = n - 1; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

// The value of 'key' in an npy header dict, as text ("'<i4'" -> "<i4", "(12,)" -> "12,"); "" when
// the key or its closing delimiter is missing.
std::string dict_value(const std::string& dict, const std::string& key) {
  const std::size_t at = dict.find("'" + key + "':");
  if (at == std::string::npos) return "";
  std::size_t b = at + key.size() + 3;
  while (b < dict.size() && dict[b] == ' ') ++b;
  if (b >= dict.size()) return "";
  const char open = dict[b];
  // A quoted or parenthesised value is read inside its delimiters; a bare one (False) up to ','.
  const bool delimited = open == '\'' || open == '(';
  const char close = open == '\'' ? '\'' : open == '(' ? ')' : ',';
  const std::size_t start = delimited ? b + 1 : b;
  const std::size_t e = dict.find(close, start);
  if (e == std::string::npos) return "";
  std::string v = dict.substr(start, e - start);
  v.erase(std::remove(v.begin(), v.end(), ' '), v.end());
  return v;
}

// The length of a 1-D shape "N," (what numpy writes for (N,)); -1 for anything else.
std::int64_t one_dim_length(const std::string& shape) {
  if (shape.size() < 2 || shape.size() > 19 || shape.back() != ',') return -1;  // at most 18 digits: no overflow
  std::int64_t n = 0;
  for (std::size_t k = 0; k + 1 < shape.size(); ++k) {
    if (shape[k] < '0' || shape[k] > '9') return -1;
    n = n * 10 + (shape[k] - '0');
  }
  return n;
}

std::uint64_t item_bytes(const std::string& descr) {
  return descr == "<i4" || descr == "<f4" ? 4 : descr == "<i8" || descr == "<f8" ? 8 : 0;
}

// Reads the local headers of a stored zip written by write_npz_csr and locates the element bytes
// of indices.npy, indptr.npy and data.npy.
PieceFile read_piece(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument(what + ": cannot open piece '" + path + "': " + std::strerror(errno));
  auto bad = [&](const std::string& why) {
    return InvalidArgument(what + ": '" + path + "' is not an otcal CSR piece (" + why + ")");
  };
  std::error_code ec;
  const std::uint64_t file_bytes = std::filesystem::file_size(path, ec);
  if (ec) throw bad("cannot read its size: " + ec.message());
  PieceFile f;
  f.path = path;
  bool found[kParts] = {false, false, false};
  std::uint64_t pos = 0;
  for (;;) {
    unsigned char h[30];
    in.seekg(static_cast<std::streamoff>(pos));
    if (!in.read(reinterpret_cast<char*>(h), 30) || le(h, 4) != 0x04034b50) break;
    if (le(h + 8, 2) != 0) throw bad("a compressed entry");
    if (le(h + 6, 2) & 8) throw bad("an entry with a data descriptor");
    std::uint64_t size = le(h + 22, 4);
    const std::size_t name_len = le(h + 26, 2), extra_len = le(h + 28, 2);
    std::string name(name_len, '\0');
    std::vector<unsigned char> extra(extra_len);
    in.read(name.data(), static_cast<std::streamsize>(name_len));
    in.read(reinterpret_cast<char*>(extra.data()), static_cast<std::streamsize>(extra_len));
    if (!in) throw bad("a truncated header");
    for (std::size_t e = 0; size == 0xFFFFFFFFu && e + 4 <= extra_len;) {
      const std::uint64_t id = le(&extra[e], 2), len = le(&extra[e + 2], 2);
      if (id == 1 && len >= 8 && e + 12 <= extra_len) size = le(&extra[e + 4], 8);
      e += 4 + len;
    }
    const std::uint64_t data = pos + 30 + name_len + extra_len;
    // Sizes come from the file: an entry must lie inside it (this also keeps pos from wrapping).
    if (size > file_bytes - std::min(file_bytes, data)) throw bad(name + " runs past the end of the file");
    const int part = name == "indices.npy" ? kIndices : name == "indptr.npy" ? kIndptr : name == "data.npy" ? kData : -1;
    if (part >= 0) {
      unsigned char m[12];
      if (size < 12 || !in.read(reinterpret_cast<char*>(m), 12) || std::memcmp(m, "\x93NUMPY", 6) != 0)
        throw bad(name + " is not .npy");
      if (m[6] < 1 || m[6] > 3) throw bad(name + " has an unknown .npy version");
      const bool v1 = m[6] == 1;
      const std::uint64_t hlen = v1 ? le(m + 8, 2) : le(m + 8, 4);
      const std::uint64_t prefix = v1 ? 10 : 12;
      if (hlen > size - prefix) throw bad(name + " has a header longer than the entry");
      std::string dict(hlen, '\0');
      in.seekg(static_cast<std::streamoff>(data + prefix));
      if (!in.read(dict.data(), static_cast<std::streamsize>(hlen))) throw bad("a truncated " + name);
      NpyRegion& r = f.part[part];
      r.offset = data + prefix + hlen;
      r.bytes = size - prefix - hlen;
      r.descr = dict_value(dict, "descr");
      r.count = one_dim_length(dict_value(dict, "shape"));
      // What write_npz_csr writes: indices int32/int64, indptr int64, values float32/float64, 1-D,
      // and exactly count values after the header.
      const bool descr_ok = part == kIndices ? (r.descr == "<i4" || r.descr == "<i8")
                            : part == kIndptr ? r.descr == "<i8"
                                              : (r.descr == "<f4" || r.descr == "<f8");
      if (!descr_ok) throw bad(name + " has dtype '" + r.descr + "'");
      if (r.count < 0) throw bad(name + " is not 1-D");
      if (dict_value(dict, "fortran_order") != "False") throw bad(name + " is not in C order");
      if (r.bytes != static_cast<std::uint64_t>(r.count) * item_bytes(r.descr))
        throw bad(name + " holds " + std::to_string(r.bytes) + " bytes for " + std::to_string(r.count) + " values");
      found[part] = true;
    }
    pos = data + size;
  }
  for (int k = 0; k < kParts; ++k)
    if (!found[k]) throw bad(std::string("no ") + part_name(static_cast<Part>(k)));
  if (f.part[kIndptr].count < 1) throw bad("an empty indptr.npy");
  return f;
}

// Bytes [offset, offset + bytes) of a file, in chunks of buf.size().
void emit_file_range(const std::string& path, std::uint64_t offset, std::uint64_t bytes, std::vector<char>& buf,
                     const ByteSink& sink) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  for (std::uint64_t left = bytes; left > 0;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
    if (!in.read(buf.data(), static_cast<std::streamsize>(n)))
      throw InvalidArgument("reading '" + path + "' failed (changed while merging?)");
    sink(buf.data(), n);
    left -= n;
  }
}

nlohmann::json read_manifest(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw InvalidArgument(what + " '" + path + "': cannot open it: " + std::strerror(errno));
  try {
    nlohmann::json j = nlohmann::json::parse(in);
    if (j.value("format", "") != "otcal csr pieces") throw std::runtime_error("not an otcal plan manifest");
    return j;
  } catch (const std::exception& e) {
    throw InvalidArgument(what + " '" + path + "' is not an otcal plan manifest (" + e.what() + ")");
  }
}

}  // namespace

void merge_npz_pieces(const std::string& manifest, const std::string& out, const std::string& what,
                      std::size_t chunk_bytes) {
  const nlohmann::json j = read_manifest(manifest, what);
  const std::filesystem::path dir = std::filesystem::path(manifest).parent_path();
  index_t rows_total = 0, cols = 0;
  std::int64_t nnz_total = 0;
  std::vector<PieceFile> pieces;
  std::vector<std::int64_t> nnz_before;
  try {
    rows_total = j.at("shape").at(0).get<index_t>();
    cols = j.at("shape").at(1).get<index_t>();
    for (const nlohmann::json& p : j.at("pieces")) {
      PieceFile f = read_piece((dir / p.at("file").get<std::string>()).string(), what);
      const index_t rows = p.at("rows").at(1).get<index_t>() - p.at("rows").at(0).get<index_t>();
      const std::int64_t nnz = p.at("nnz").get<std::int64_t>();
      if (f.part[kIndptr].count != rows + 1 || f.part[kIndices].count != nnz || f.part[kData].count != nnz)
        throw InvalidArgument(what + ": piece '" + f.path + "' does not hold the rows and entries the manifest says");
      if (!pieces.empty() && (f.part[kIndices].descr != pieces[0].part[kIndices].descr ||
                              f.part[kData].descr != pieces[0].part[kData].descr))
        throw InvalidArgument(what + ": piece '" + f.path + "' has other dtypes than the first piece");
      nnz_before.push_back(nnz_total);
      nnz_total += nnz;
      pieces.push_back(std::move(f));
    }
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(what + " '" + manifest + "': missing or bad field (" + e.what() + ")");
  }
  if (pieces.empty()) throw InvalidArgument(what + " '" + manifest + "' lists no pieces");
  if (nnz_total != j.value("nnz", std::int64_t{-1}))
    throw InvalidArgument(what + ": the pieces hold " + std::to_string(nnz_total) + " entries, the manifest says " +
                          j.value("nnz", std::string("?")));

  // Whole int64 values per chunk, so indptr chunks can be shifted as they come.
  std::vector<char> buf((std::max<std::size_t>(chunk_bytes, 8) + 7) / 8 * 8);
  // The element bytes of one entry, piece after piece (indptr shifted, all but the first 0 dropped).
  auto parts = [&](Part part) -> ByteEmitter {
    return [&, part](const ByteSink& sink) {
      for (std::size_t k = 0; k < pieces.size(); ++k) {
        const NpyRegion& r = pieces[k].part[part];
        if (part != kIndptr) {
          emit_file_range(pieces[k].path, r.offset, r.bytes, buf, sink);
          continue;
        }
        const std::size_t skip = k == 0 ? 0 : sizeof(std::int64_t);
        std::vector<std::int64_t> values;
        emit_file_range(pieces[k].path, r.offset + skip, r.bytes - skip, buf, [&](const char* p, std::size_t n) {
          values.resize(n / sizeof(std::int64_t));  // chunks hold whole values: buf is a multiple of 8
          std::memcpy(values.data(), p, n);
          emit_shifted(values.data(), 0, values.size(), nnz_before[k], sink);
        });
      }
    };
  };
  const bool wide = pieces[0].part[kIndices].descr == "<i8";
  const DType dtype = pieces[0].part[kData].descr == "<f4" ? DType::float32 : DType::float64;
  detail::ZipWriter zip(out, false);
  auto add = [&](Part part) {
    const std::string header = part_header(part, rows_total, nnz_total, wide, dtype);
    const ByteEmitter body = parts(part);
    const ByteEmitter emit = [&](const ByteSink& sink) {
      sink(header.data(), header.size());
      body(sink);
    };
    std::uint64_t size = header.size();
    for (std::size_t k = 0; k < pieces.size(); ++k)
      size += pieces[k].part[part].bytes - (part == kIndptr && k > 0 ? sizeof(std::int64_t) : 0);
    zip.add(part_name(part), detail::crc32_of(emit), size, emit);
  };
  add(kIndices);
  add(kIndptr);
  add_format_and_shape(zip, rows_total, cols);
  add(kData);
  zip.finish();
}

}  // namespace otcal::io
