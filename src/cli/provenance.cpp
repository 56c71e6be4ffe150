#include "cli/provenance.hpp"

#include <filesystem>
#include <tuple>

#include "io/file_checksum.hpp"
#include "otcal/errors.hpp"

namespace otcal::cli {
namespace {

constexpr int kProvenanceFormat = 1;
// The fields recorded and checked against result.json's top level, in the order checked.
const char* const kFields[] = {"epsilon", "scale", "cost", "precision", "n", "m", "d"};

std::string crc_of(const std::string& path, const std::string& what) {
  return io::crc32_text(io::file_crc32(path, what));
}

// A pipe or other stream (--x /dev/stdin, <(...)) was read once and cannot be read again: its
// checksum is recorded as null and never compared (docs/sinkhorn.md, provenance).
bool rereadable(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

nlohmann::json file_entry(const std::string& path, const std::string& what) {
  if (path.empty()) return nullptr;
  if (!rereadable(path)) return {{"path", path}, {"crc32", nullptr}};
  return {{"path", path}, {"crc32", crc_of(path, what)}};
}

std::string seal_of(nlohmann::json fields) {
  fields.erase("seal");
  return io::crc32_text(io::text_crc32(fields.dump()));
}

// A JSON value as a user wrote it: strings without their quotes.
std::string show(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

}  // namespace

nlohmann::json potentials_provenance(const SinkhornResult& r, const CloudFiles& in, const Clouds& clouds,
                                     const std::string& f_file, const std::string& g_file) {
  nlohmann::json p;
  p["format"] = kProvenanceFormat;
  p["epsilon"] = r.epsilon;
  p["scale"] = r.scale;
  p["cost"] = r.cost.name();
  p["precision"] = dtype_name(r.precision);
  p["n"] = r.n;
  p["m"] = r.m;
  p["d"] = r.d;
  p["x_dtype"] = dtype_name(clouds.x.dtype);
  p["y_dtype"] = dtype_name(clouds.has_y ? clouds.y.dtype : clouds.x.dtype);
  p["files"] = {{"x", file_entry(in.x, "--x")},
                {"y", file_entry(in.y, "--y")},
                {"a", file_entry(in.a, "--a")},
                {"b", file_entry(in.b, "--b")},
                {"f", {{"path", "f.npy"}, {"crc32", crc_of(f_file, "f.npy")}}},
                {"g", {{"path", "g.npy"}, {"crc32", crc_of(g_file, "g.npy")}}}};
  p["seal"] = seal_of(p);
  return p;
}

std::optional<std::string> verify_potentials_provenance(const nlohmann::json& result, const std::string& dir,
                                                        const CloudFiles& given) {
  const std::string json_path = dir + "/result.json";
  const std::string rerun = ": rerun otcal sinkhorn (or solve) to compute potentials for what you want";
  if (!result.is_object() || !result.contains("provenance"))
    return "--potentials '" + json_path + "' has no provenance record (written by an otcal from before "
           "provenance records, or by hand): its epsilon, scale, cost and potentials and the clouds given are trusted unchecked; rerun "
           "otcal sinkhorn to have them checked";
  const nlohmann::json& p = result["provenance"];
  auto malformed = [&](const std::string& what) {
    return InvalidArgument("--potentials '" + json_path + "': its provenance record is malformed (" + what + ")" +
                           rerun);
  };
  if (!p.is_object() || !p.contains("seal") || !p["seal"].is_string()) throw malformed("no seal");
  if (p.value("format", 0) != kProvenanceFormat)
    throw malformed("format " + show(p.value("format", nlohmann::json(nullptr))) + ", this otcal reads " +
                    std::to_string(kProvenanceFormat));
  // 1. The seal: an edit inside the record itself.
  const std::string seal = p["seal"].get<std::string>(), want_seal = seal_of(p);
  if (seal != want_seal)
    throw InvalidArgument("--potentials '" + json_path + "': the provenance seal " + seal +
                          " does not match its fields (" + want_seal +
                          "): the record was edited after the solve" + rerun);
  // 2. Every recorded field against the value sparsify would use.
  for (const char* key : kFields) {
    if (!p.contains(key)) throw malformed(std::string("no ") + key);
    if (!result.contains(key) || result[key] != p[key])
      throw InvalidArgument("--potentials '" + json_path + "': " + key + " " +
                            (result.contains(key) ? show(result[key]) : std::string("(absent)")) +
                            " differs from the " + key + " " + show(p[key]) +
                            " the potentials were computed with" + rerun + " rather than editing result.json");
  }
  if (!p.contains("files") || !p["files"].is_object()) throw malformed("no files");
  const nlohmann::json& files = p["files"];
  auto recorded = [&](const char* name) -> std::optional<std::string> {
    if (!files.contains(name)) throw malformed(std::string("no files.") + name);
    const nlohmann::json& e = files[name];
    if (e.is_null()) return std::nullopt;
    if (e.is_object() && e.contains("crc32") && e["crc32"].is_null()) return std::string();  // a stream: unchecked
    if (!e.is_object() || !e.contains("crc32") || !e["crc32"].is_string())
      throw malformed(std::string("files.") + name + " has no crc32");
    return e["crc32"].get<std::string>();
  };
  auto recorded_path = [&](const char* name) { return files[name].value("path", std::string("?")); };
  // 3. The potentials as written.
  for (const char* pot : {"f", "g"}) {
    const std::string path = dir + "/" + pot + ".npy";
    const std::optional<std::string> want = recorded(pot);
    if (!want) throw malformed(std::string("files.") + pot + " is null");
    const std::string got = crc_of(path, "--potentials " + std::string(pot) + ".npy");
    if (got != *want)
      throw InvalidArgument("--potentials '" + path + "' is not the " + pot + ".npy the solve wrote (" + got +
                            ", recorded " + *want + "): the potentials were changed after the solve" + rerun);
  }
  // 4. The clouds and weights given now, against those solved on. y is the cloud used as y on
  // both sides: --y, or --x without it.
  auto mismatch = [&](const std::string& flag, const std::string& path, const std::string& got, const char* was,
                      const std::string& want) {
    return InvalidArgument(flag + " '" + path + "' is not the file the potentials were solved on (" + got +
                           "; the solve's --" + was + " '" + recorded_path(was) + "' had " + want +
                           "): pass the files given to otcal sinkhorn, or rerun it on these");
  };
  const std::optional<std::string> rx = recorded("x"), ry = recorded("y");
  if (!rx) throw malformed("files.x is null");
  // "" on either side: a stream, read once, that cannot be compared.
  const std::string gx = rereadable(given.x) ? crc_of(given.x, "--x") : "";
  if (!gx.empty() && !rx->empty() && gx != *rx) throw mismatch("--x", given.x, gx, "x", *rx);
  const bool given_y = !given.y.empty();
  const std::string gy = !given_y ? gx : rereadable(given.y) ? crc_of(given.y, "--y") : "";
  const std::string want_y = ry ? *ry : *rx;
  if (!gy.empty() && !want_y.empty() && gy != want_y)
    throw mismatch(given_y ? "--y" : "--x (used as y: no --y)", given_y ? given.y : given.x, gy, ry ? "y" : "x",
                   want_y);
  for (const auto& [flag, name, path] : {std::tuple{"--a", "a", given.a}, std::tuple{"--b", "b", given.b}}) {
    if (path.empty()) continue;  // the potentials absorb the weights: they are only checked when given
    const std::optional<std::string> want = recorded(name);
    if (!want)
      throw InvalidArgument(std::string(flag) + " '" + path + "' was given but the potentials were solved with " +
                            "uniform weights (no " + flag + "): omit " + flag + ", or rerun otcal sinkhorn with it");
    if (want->empty() || !rereadable(path)) continue;
    const std::string got = crc_of(path, flag);
    if (got != *want) throw mismatch(flag, path, got, name, *want);
  }
  return std::nullopt;
}

}  // namespace otcal::cli
