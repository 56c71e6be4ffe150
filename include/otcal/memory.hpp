#pragma once
// Memory resources shaped like RMM's: small, stream-ordered, composable by wrapping.
//   budgeted = LimitingAdaptor(StatisticsAdaptor(base), memory_budget)
// Limiting refuses allocations past the budget; Statistics records current and peak bytes.
#include <atomic>
#include <string>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

namespace otcal {

// Opaque stream handle (a cudaStream_t on the CUDA backend, null on the CPU backend).
using StreamHandle = void*;

inline constexpr std::size_t kDefaultAlignment = 256;

inline std::size_t align_up(std::size_t bytes, std::size_t alignment = kDefaultAlignment) {
  return (bytes + alignment - 1) / alignment * alignment;
}

class MemoryResource {
 public:
  virtual ~MemoryResource() = default;
  void* allocate(StreamHandle stream, std::size_t bytes, std::size_t alignment = kDefaultAlignment) {
    return do_allocate(stream, bytes, alignment);
  }
  // `stream` is the stream on which the memory was last used (RMM's rule).
  void deallocate(StreamHandle stream, void* p, std::size_t bytes,
                  std::size_t alignment = kDefaultAlignment) noexcept {
    do_deallocate(stream, p, bytes, alignment);
  }
  bool is_equal(const MemoryResource& other) const noexcept {
    return this == &other || do_is_equal(other);
  }

 private:
  virtual void* do_allocate(StreamHandle stream, std::size_t bytes, std::size_t alignment) = 0;
  virtual void do_deallocate(StreamHandle stream, void* p, std::size_t bytes,
                             std::size_t alignment) noexcept = 0;
  virtual bool do_is_equal(const MemoryResource&) const noexcept { return false; }
};

// Aligned host memory: the base resource of the CPU backend.
class HostResource final : public MemoryResource {
 private:
  void* do_allocate(StreamHandle, std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(StreamHandle, void* p, std::size_t bytes, std::size_t alignment) noexcept override;
};

// Page-locked host memory on a CUDA build with a working device; plain host memory otherwise.
class PinnedHostResource final : public MemoryResource {
 public:
  bool pinned() const noexcept { return pinned_; }
  PinnedHostResource();

 private:
  void* do_allocate(StreamHandle, std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(StreamHandle, void* p, std::size_t bytes, std::size_t alignment) noexcept override;
  bool pinned_ = false;
  std::mutex mutex_;
  std::set<void*> pageable_;  // fallback allocations, freed as host memory
};

// Refuses any allocation that would put live (256-aligned) bytes above `limit`.
class LimitingAdaptor final : public MemoryResource {
 public:
  LimitingAdaptor(MemoryResource& upstream, std::size_t limit, std::size_t alignment = kDefaultAlignment)
      : upstream_(upstream), limit_(limit), alignment_(alignment) {}
  std::size_t allocated_bytes() const noexcept { return allocated_.load(); }
  std::size_t limit() const noexcept { return limit_; }
  MemoryResource& upstream() noexcept { return upstream_; }

 private:
  void* do_allocate(StreamHandle stream, std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(StreamHandle stream, void* p, std::size_t bytes, std::size_t alignment) noexcept override;
  MemoryResource& upstream_;
  std::size_t limit_;
  std::size_t alignment_;
  std::atomic<std::size_t> allocated_{0};
};

// Current, peak and total bytes and allocation counts, with nestable measurement scopes.
class StatisticsAdaptor final : public MemoryResource {
 public:
  struct Counter {
    std::int64_t value = 0;
    std::int64_t peak = 0;
    std::int64_t total = 0;
  };
  explicit StatisticsAdaptor(MemoryResource& upstream) : upstream_(upstream) {}
  Counter bytes() const;
  Counter allocations() const;
  // Start a nested measurement: peaks inside are reported relative to nothing, and on pop the
  // outer peak becomes max(outer.peak, outer.value_at_push + inner.peak).
  void push_scope();
  Counter pop_scope();
  // Requires no live bytes; zeroes every counter.
  void reset();
  MemoryResource& upstream() noexcept { return upstream_; }

 private:
  void* do_allocate(StreamHandle stream, std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(StreamHandle stream, void* p, std::size_t bytes, std::size_t alignment) noexcept override;
  struct Scope {
    Counter bytes, allocs;
  };
  MemoryResource& upstream_;
  mutable std::mutex mutex_;
  std::vector<Scope> scopes_{Scope{}};
};

// Owning typed buffer that remembers its resource and stream. The stream orders the allocation
// and the free (RMM's rule: name the stream that uses the memory). A null stream on a CUDA
// context's resources is that context's compute stream, never the legacy default stream, so a
// buffer made without one is still ordered with the library's kernels.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(MemoryResource& mr, std::size_t count, StreamHandle stream = nullptr)
      : mr_(&mr), stream_(stream), count_(count) {
    if (count_ > 0) data_ = static_cast<T*>(mr_->allocate(stream_, count_ * sizeof(T)));
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      swap(o);
    }
    return *this;
  }
  ~Buffer() { release(); }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return count_; }
  std::size_t bytes() const noexcept { return count_ * sizeof(T); }
  // Host-accessible resources only.
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  void set_stream(StreamHandle s) noexcept { stream_ = s; }

 private:
  void release() noexcept {
    if (data_ != nullptr) mr_->deallocate(stream_, data_, count_ * sizeof(T));
    data_ = nullptr;
    count_ = 0;
  }
  void swap(Buffer& o) noexcept {
    std::swap(mr_, o.mr_);
    std::swap(stream_, o.stream_);
    std::swap(data_, o.data_);
    std::swap(count_, o.count_);
  }
  MemoryResource* mr_ = nullptr;
  StreamHandle stream_ = nullptr;
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

// Parses "123", "512MiB", "8GiB", "64MB", "1.5GiB" into bytes; throws InvalidArgument naming `what`.
std::size_t parse_bytes(const std::string& text, const std::string& what = "memory budget");
std::string format_bytes(std::size_t bytes);

}  // namespace otcal
