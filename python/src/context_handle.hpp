#pragma once
// The context a Python call runs in: otcal::Context plus the warnings it emitted, which the
// Python layer turns into warnings.warn calls once the GIL is held again (library warnings may be
// emitted from worker code that runs without it).
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "otcal/context.hpp"

namespace otcal::py {

class WarningLog {
 public:
  void add(const std::string& message) {
    std::lock_guard lock(mutex_);
    messages_.push_back(message);
  }
  std::vector<std::string> drain() {
    std::lock_guard lock(mutex_);
    return std::exchange(messages_, {});
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> messages_;
};

struct ContextHandle {
  std::shared_ptr<WarningLog> warnings;
  otcal::Context ctx;
};

ContextHandle make_context(const std::string& device, std::size_t memory_budget, int threads);

}  // namespace otcal::py
