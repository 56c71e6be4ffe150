// The calibration spec (`otcal calibrate --spec`), read from JSON into a ConstraintSpec.
#include "io/spec_json.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "io/npy.hpp"
#include "otcal/errors.hpp"

namespace otcal::io {
namespace {

using ojson = nlohmann::ordered_json;

double json_number(const ojson& v, const std::string& where, const std::string& spec_path) {
  if (!v.is_number())
    throw InvalidArgument("--spec '" + spec_path + "': " + where + " must be a number, got " + v.dump());
  const double x = v.get<double>();
  if (!std::isfinite(x))  // 1e999 parses to inf
    throw InvalidArgument("--spec '" + spec_path + "': " + where + " must be a finite number, got " + v.dump());
  return x;
}

// Totals and category counts are sums of positive weights: a negative one cannot be met.
double json_count(const ojson& v, const std::string& where, const std::string& spec_path) {
  const double x = json_number(v, where, spec_path);
  if (x < 0)
    throw InvalidArgument("--spec '" + spec_path + "': " + where + " is " + v.dump() +
                          "; a weighted count cannot be negative (weights are > 0)");
  return x;
}

}  // namespace

ConstraintSpec parse_spec_json(const std::string& text, const std::string& path, const RecordTable& table,
                               const std::string& weights_column) {
  ojson j;
  try {
    j = ojson::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument("--spec '" + path + "' is not valid JSON: " + std::string(e.what()));
  }
  if (!j.is_object()) throw InvalidArgument("--spec '" + path + "': the top level must be a JSON object");
  ConstraintSpec spec;
  spec.weight_column = weights_column;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (key == "total") {
      spec.total = json_count(it.value(), "\"total\"", path);
    } else if (key == "marginal") {
      if (!it.value().is_object()) throw InvalidArgument("--spec '" + path + "': \"marginal\" must be an object {column: {category: target}}");
      for (auto c = it.value().begin(); c != it.value().end(); ++c) {
        if (!c.value().is_object())
          throw InvalidArgument("--spec '" + path + "': marginal \"" + c.key() + "\" must be an object {category: target}");
        std::vector<std::pair<std::string, double>> cats;
        for (auto k = c.value().begin(); k != c.value().end(); ++k)
          cats.emplace_back(k.key(), json_count(k.value(), "marginal." + c.key() + "." + k.key(), path));
        spec.marginal.emplace_back(c.key(), std::move(cats));
      }
    } else if (key == "continuous") {
      if (!it.value().is_object()) throw InvalidArgument("--spec '" + path + "': \"continuous\" must be an object {column: total}");
      for (auto c = it.value().begin(); c != it.value().end(); ++c)
        spec.continuous.emplace_back(c.key(), json_number(c.value(), "continuous." + c.key(), path));
    } else if (key == "linear") {
      if (!it.value().is_array()) throw InvalidArgument("--spec '" + path + "': \"linear\" must be a list of constraints");
      int idx = 0;
      for (const auto& lc : it.value()) {
        const std::string where = "linear[" + std::to_string(idx++) + "]";
        if (!lc.is_object() || !lc.contains("name") || !lc["name"].is_string() || !lc.contains("target"))
          throw InvalidArgument("--spec '" + path + "': " + where + " needs \"name\" (string), \"target\" and \"column\" or \"coefficients\"");
        LinearConstraint c;
        c.name = lc["name"].get<std::string>();
        c.target = json_number(lc["target"], where + ".target", path);
        if (lc.contains("column") && lc["column"].is_string()) {
          const TableColumn* col = table.find(lc["column"].get<std::string>());
          if (!col || !col->numeric)
            throw InvalidArgument("--spec '" + path + "': " + where + ".column '" + lc["column"].get<std::string>() +
                                  "' is not a numeric column of --data");
          c.coefficients = col->numbers;
        } else if (lc.contains("coefficients") && lc["coefficients"].is_string()) {
          std::filesystem::path p = lc["coefficients"].get<std::string>();
          if (p.is_relative()) p = std::filesystem::path(path).parent_path() / p;
          std::error_code ec;
          if (std::filesystem::is_directory(p, ec))
            throw InvalidArgument("--spec '" + path + "': " + where + ".coefficients '" + p.string() +
                                  "' is a folder; give the path of a 1-D .npy file");
          const auto arr = io::read_npy(p.string(), "--spec " + where + ".coefficients");
          if (arr.shape.size() != 1)
            throw InvalidArgument("--spec " + where + ".coefficients '" + p.string() + "' must be 1-D");
          c.coefficients = arr.values();
        } else {
          throw InvalidArgument("--spec '" + path + "': " + where + " needs \"column\" (a data column) or \"coefficients\" (an .npy path)");
        }
        spec.linear.push_back(std::move(c));
      }
    } else {
      throw InvalidArgument("--spec '" + path + "': unknown key \"" + key + "\" (expected total, marginal, continuous, linear)");
    }
  }
  if (!spec.total && spec.marginal.empty() && spec.continuous.empty() && spec.linear.empty())
    throw InvalidArgument("--spec '" + path +
                          "' has no constraints: give \"total\", \"marginal\", \"continuous\" or \"linear\"");
  return spec;
}

ConstraintSpec read_spec_json(const std::string& path, const RecordTable& table, const std::string& weights_column) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw InvalidArgument("--spec '" + path + "' is a folder; give the path of a JSON file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument("--spec: cannot open '" + path + "' for reading");
  std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) throw InvalidArgument("--spec '" + path + "': reading failed");
  return parse_spec_json(text, path, table, weights_column);
}

}  // namespace otcal::io
