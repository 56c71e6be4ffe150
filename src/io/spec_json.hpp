#pragma once
// The calibration spec of `otcal calibrate --spec SPEC.json` (docs/calibration.md):
//   {"total": N?, "marginal": {"col": {"cat": target, ...}, ...}, "continuous": {"col": total, ...},
//    "linear": [{"name": ..., "column": "col" | "coefficients": "file.npy", "target": t}, ...]}
// Relative .npy paths are resolved against the spec file's folder. Errors are InvalidArgument
// naming --spec, the path and the offending key.
#include <string>

#include "otcal/calibration.hpp"

namespace otcal::io {

// `text` is the JSON; `path` names it in messages and anchors relative coefficient paths.
ConstraintSpec parse_spec_json(const std::string& text, const std::string& path, const RecordTable& table,
                               const std::string& weights_column);
ConstraintSpec read_spec_json(const std::string& path, const RecordTable& table, const std::string& weights_column);

}  // namespace otcal::io
