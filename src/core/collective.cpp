#include "core/collective.hpp"

#include <cstring>
#include <sstream>

#include "otcal/errors.hpp"

namespace otcal::detail {

void ordered_fold(Communicator& comm, std::vector<double>& running,
                  const std::function<void(std::vector<double>&)>& fold_mine) {
  const int r = comm.rank(), P = comm.size();
  const std::size_t bytes = running.size() * sizeof(double);
  if (P == 1) {
    fold_mine(running);
    return;
  }
  if (r > 0) comm.receive(running.data(), bytes, r - 1);
  fold_mine(running);
  if (r < P - 1) comm.send(running.data(), bytes, r + 1);
  std::string wire(bytes, '\0');
  if (r == P - 1) std::memcpy(wire.data(), running.data(), bytes);
  comm.broadcast(wire, P - 1);
  std::memcpy(running.data(), wire.data(), bytes);
}

double ordered_sum(Communicator& comm, const std::vector<double>& partials) {
  std::vector<double> running{0.0};
  ordered_fold(comm, running, [&](std::vector<double>& acc) {
    for (double p : partials) acc[0] += p;
  });
  return running[0];
}

namespace {

enum Kind : std::uint64_t { ok = 0, invalid, budget, out_of_budget, out_of_memory, numerical, calibration, device, other };

Kind kind_of(std::exception_ptr e, std::string& message, std::size_t& required) {
  try {
    std::rethrow_exception(e);
  } catch (const BudgetTooSmall& x) {
    message = x.what();
    required = x.required_bytes();
    return budget;
  } catch (const InvalidArgument& x) {
    message = x.what();
    return invalid;
  } catch (const OutOfBudget& x) {
    message = x.what();
    return out_of_budget;
  } catch (const OutOfMemory& x) {
    message = x.what();
    return out_of_memory;
  } catch (const NumericalError& x) {
    message = x.what();
    return numerical;
  } catch (const CalibrationFailed& x) {
    message = x.what();
    return calibration;
  } catch (const DeviceError& x) {
    message = x.what();
    return device;
  } catch (const std::bad_alloc&) {
    message = "host memory exhausted (std::bad_alloc)";
    return out_of_memory;
  } catch (const std::exception& x) {
    message = x.what();
    return other;
  }
}

[[noreturn]] void raise(Kind k, const std::string& message, std::size_t required) {
  switch (k) {
    case invalid: throw InvalidArgument(message);
    case budget: throw BudgetTooSmall(message, required);
    case out_of_budget: throw OutOfBudget(message);
    case out_of_memory: throw OutOfMemory(message);
    case numerical: throw NumericalError(message);
    case calibration: throw CalibrationFailed(message);
    case device: throw DeviceError(message);
    default: throw Error(message);
  }
}

}  // namespace

void agree(Communicator& comm, std::exception_ptr failure) {
  if (comm.size() == 1) {
    if (failure) std::rethrow_exception(failure);
    return;
  }
  std::string message;
  std::size_t required = 0;
  const Kind mine = failure ? kind_of(failure, message, required) : ok;
  const std::vector<std::uint64_t> kinds = comm.all_gather_word(mine);
  int root = -1;
  for (std::size_t r = 0; r < kinds.size() && root < 0; ++r)
    if (kinds[r] != ok) root = static_cast<int>(r);
  if (root < 0) return;
  // The failing rank's message and required bytes, as "required\nmessage".
  std::string wire;
  if (comm.rank() == root) wire = std::to_string(required) + "\n" + message;
  comm.broadcast(wire, root);
  const std::size_t cut = wire.find('\n');
  required = std::stoull(wire.substr(0, cut));
  message = wire.substr(cut + 1);
  const std::string prefix = "rank " + std::to_string(root) + ": ";
  raise(static_cast<Kind>(kinds[static_cast<std::size_t>(root)]),
        message.rfind(prefix, 0) == 0 ? message : prefix + message, required);
}

}  // namespace otcal::detail
