#pragma once
// Umbrella header.
#include "otcal/array.hpp"
#include "otcal/context.hpp"
#include "otcal/csr.hpp"
#include "otcal/errors.hpp"
#include "otcal/geometry.hpp"
#include "otcal/memory.hpp"
#include "otcal/planner.hpp"
#include "otcal/sinkhorn.hpp"
#include "otcal/types.hpp"
#if __has_include("otcal/sparsify.hpp")
#include "otcal/sparsify.hpp"
#endif
#if __has_include("otcal/calibration.hpp")
#include "otcal/calibration.hpp"
#endif
