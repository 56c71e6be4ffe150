#pragma once
// Umbrella header.
#include "otcal/array.hpp"
#include "otcal/calibration.hpp"
#include "otcal/context.hpp"
#include "otcal/csr.hpp"
#include "otcal/errors.hpp"
#include "otcal/geometry.hpp"
#include "otcal/memory.hpp"
#include "otcal/planner.hpp"
#include "otcal/problem.hpp"
#include "otcal/sinkhorn.hpp"
#include "otcal/sparsify.hpp"
#include "otcal/types.hpp"
