#pragma once
// What every operation does around its work, in one place: a peak-memory scope on the budgeted
// statistics, the user-stream ordering on CUDA, and the context's CPU thread count.
#include "core/backend.hpp"
#include "core/cuda_runtime.hpp"
#include "otcal/context.hpp"

namespace otcal::detail {

class OperationScope {
 public:
  explicit OperationScope(const Context& ctx) : ctx_(ctx), threads_(ctx.threads()) {
    // The calling thread may have another device current: make ours current for the launches.
    if (ctx_.kind() == DeviceKind::cuda) cuda_set_device(ctx_.device_id());
    ctx_.statistics().push_scope();
    ctx_.enter_user_stream();
  }
  OperationScope(const OperationScope&) = delete;
  OperationScope& operator=(const OperationScope&) = delete;
  ~OperationScope() {
    if (open_) ctx_.statistics().pop_scope();
  }

  // The user stream waits for our work, we wait for it; returns the peak bytes measured in scope.
  std::size_t finish() {
    ctx_.exit_user_stream();
    ctx_.synchronize();
    open_ = false;
    return static_cast<std::size_t>(ctx_.statistics().pop_scope().peak);
  }

 private:
  const Context& ctx_;
  ThreadScope threads_;
  bool open_ = true;
};

// Waits for the context's streams when it goes out of scope, also when an exception unwinds: declared
// after a Workspace, it keeps the workspace alive until work queued on other streams (the copy
// stream of a streamed output) has finished with it.
class DrainStreams {
 public:
  explicit DrainStreams(const Context& ctx) : ctx_(ctx) {}
  DrainStreams(const DrainStreams&) = delete;
  DrainStreams& operator=(const DrainStreams&) = delete;
  ~DrainStreams() {
    try {
      ctx_.synchronize();
    } catch (...) {  // a sticky device error is reported by the operation itself
    }
  }

 private:
  const Context& ctx_;
};

}  // namespace otcal::detail
