#pragma once
// The allocator half of a workspace plan: walks the operation's WorkspaceDecl at the planned tile
// rows and allocates every declared buffer, in order, from one resource. Nothing else in an
// operation allocates from the budget, so measured peak <= planned peak by construction.
// Allocation and free are ordered on `stream`, the stream whose kernels use the memory (callers
// pass ctx.compute_stream(); null means the same on a CUDA context, see memory.hpp).
#include <vector>

#include "otcal/errors.hpp"
#include "otcal/memory.hpp"
#include "otcal/planner.hpp"

namespace otcal::detail {

class Workspace {
 public:
  Workspace() = default;
  Workspace(MemoryResource& mr, const WorkspaceDecl& decl, index_t rows, StreamHandle stream = nullptr)
      : mr_(&mr), stream_(stream) {
    slots_.reserve(decl.buffers.size());
    try {
      for (const BufferDecl& b : decl.buffers) {
        const std::size_t bytes = b.count(rows) * b.element_size;
        slots_.push_back({bytes > 0 ? mr.allocate(stream, bytes) : nullptr, bytes, b.count(rows), b.element_size});
      }
    } catch (...) {
      release();
      throw;
    }
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  Workspace(Workspace&& o) noexcept { swap(o); }
  Workspace& operator=(Workspace&& o) noexcept {
    if (this != &o) {
      release();
      swap(o);
    }
    return *this;
  }
  ~Workspace() { release(); }

  template <class T>
  T* get(BufferId<T> id) const {
    const Slot& s = slots_.at(id.index);
    if (s.element_size != sizeof(T)) throw InvalidArgument("workspace buffer accessed with the wrong element type");
    return static_cast<T*>(s.ptr);
  }
  template <class T>
  std::size_t count(BufferId<T> id) const {
    return slots_.at(id.index).count;
  }

 private:
  struct Slot {
    void* ptr = nullptr;
    std::size_t bytes = 0;
    std::size_t count = 0;
    std::size_t element_size = 0;
  };
  void release() noexcept {
    for (auto it = slots_.rbegin(); it != slots_.rend(); ++it)
      if (it->ptr) mr_->deallocate(stream_, it->ptr, it->bytes);
    slots_.clear();
  }
  void swap(Workspace& o) noexcept {
    std::swap(mr_, o.mr_);
    std::swap(stream_, o.stream_);
    std::swap(slots_, o.slots_);
  }
  MemoryResource* mr_ = nullptr;
  StreamHandle stream_ = nullptr;
  std::vector<Slot> slots_;
};

}  // namespace otcal::detail
