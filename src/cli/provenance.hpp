#pragma once
// The provenance of a potentials folder (docs/sinkhorn.md "Provenance", docs/sparsify.md): what
// f.npy and g.npy were computed with (epsilon, scale, cost, precision, shapes, dtypes) and from
// (crc32 of --x/--y/--a/--b as given), the crc32 of f.npy and g.npy as written, and a seal over
// all of it. `otcal sparsify` verifies it, so that a result.json edited after the solve (another
// epsilon), changed potentials or other clouds are refused instead of giving a wrong plan.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cli/sinkhorn_args.hpp"
#include "otcal/sinkhorn.hpp"

namespace otcal::cli {

// The "provenance" object of result.json, built by the writing rank once f.npy and g.npy are
// written at `f_file` and `g_file`. Reads every input file once more (O(file sizes)).
nlohmann::json potentials_provenance(const SinkhornResult& r, const CloudFiles& in, const Clouds& clouds,
                                     const std::string& f_file, const std::string& g_file);

// Checks result.json (`result`, read from `dir`) against its provenance, in this order: the seal,
// each recorded field against the top-level value sparsify uses, f.npy and g.npy, then the
// --x/--y/--a/--b that were `given`. InvalidArgument names the field or flag. A result.json
// without provenance (an otcal before it, or potentials written by hand) is accepted: the returned
// warning says that nothing could be checked.
std::optional<std::string> verify_potentials_provenance(const nlohmann::json& result, const std::string& dir,
                                                        const CloudFiles& given);

}  // namespace otcal::cli
