#pragma once
// What the host loops build from the communicator's collectives: sums folded in rank order (so a
// distributed sum is the single-process sum bit for bit), and errors every rank agrees on.
#include <exception>
#include <functional>
#include <optional>
#include <type_traits>
#include <vector>

#include "otcal/communicator.hpp"

namespace otcal::detail {

// The left fold running[k] += partial over every rank's partials in rank order: rank r receives
// the running values from rank r - 1, applies `fold_mine`, passes them on; the last rank's values
// reach every rank. P - 1 hops of running.size() doubles (docs/distributed.md §4).
void ordered_fold(Communicator& comm, std::vector<double>& running,
                  const std::function<void(std::vector<double>&)>& fold_mine);

// 0 + p_0 + p_1 + ... over the granule partials of every rank, in rank order.
double ordered_sum(Communicator& comm, const std::vector<double>& partials);

// Every rank calls this at the same point with the exception its step threw (or none). When any
// rank failed, every rank throws the error of the first failing rank: the same type and the same
// message, naming that rank. A failure on one rank never leaves the others waiting in a collective.
void agree(Communicator& comm, std::exception_ptr failure);

// Runs `step` and agrees on its outcome.
template <class F>
auto agreed(Communicator& comm, F&& step) -> decltype(step()) {
  std::exception_ptr failure;
  if constexpr (std::is_void_v<decltype(step())>) {
    try {
      step();
    } catch (...) {
      failure = std::current_exception();
    }
    agree(comm, failure);
  } else {
    std::optional<decltype(step())> out;
    try {
      out.emplace(step());
    } catch (...) {
      failure = std::current_exception();
    }
    agree(comm, failure);
    return std::move(*out);
  }
}

}  // namespace otcal::detail
