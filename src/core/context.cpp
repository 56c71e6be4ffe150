#include "otcal/context.hpp"

#include "core/host_memory.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <atomic>
#include <type_traits>
#include <iostream>
#include <mutex>

#include "core/backend.hpp"
#include "core/cuda_runtime.hpp"
#include "otcal/errors.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace otcal {

struct Context::Impl {
  DeviceKind kind = DeviceKind::cpu;
  int device = -1;
  std::string name;
  std::string note;
  int threads = 1;
  std::size_t budget = 0;
  std::unique_ptr<MemoryResource> base;
  std::unique_ptr<StatisticsAdaptor> stats;
  std::unique_ptr<LimitingAdaptor> limited;
  MemoryResource* output = nullptr;
  std::unique_ptr<StatisticsAdaptor> output_stats;  // wraps a caller's output resource
  std::unique_ptr<PinnedHostResource> pinned_base;
  std::unique_ptr<LimitingAdaptor> pinned;
  StreamHandle compute = nullptr, copy = nullptr, user = nullptr;
  std::function<void(const std::string&)> on_warning;
  std::mutex warn_mutex;
  // One backend per dtype, made on first use; they hold a non-owning view of this context.
  std::mutex backend_mutex;
  std::unique_ptr<detail::Backend<float>> backend32;
  std::unique_ptr<detail::Backend<double>> backend64;
  std::atomic<std::uint64_t> cloud_uploads{0};
  std::shared_ptr<Communicator> communicator;

  ~Impl() {
    // Backends and budgeted buffers must be gone before the streams they were used on.
    backend32.reset();
    backend64.reset();
    if (kind == DeviceKind::cuda) {
      detail::cuda_stream_destroy(compute);
      detail::cuda_stream_destroy(copy);
    }
  }
};

namespace {

std::size_t host_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page) : 0;
}

using detail::host_available_bytes;

int default_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void finish(Context::Impl& c, const ContextOptions& o, std::size_t total, std::size_t free) {
  std::size_t def = total / 4;
  if (free > 0) def = std::min(def, free);
  c.budget = o.memory_budget > 0 ? o.memory_budget : std::max<std::size_t>(def, 1);
  c.on_warning = o.on_warning;
  c.stats = std::make_unique<StatisticsAdaptor>(*c.base);
  c.limited = std::make_unique<LimitingAdaptor>(*c.stats, c.budget);
  c.output = c.limited.get();
  c.pinned_base = std::make_unique<PinnedHostResource>();
  c.pinned = std::make_unique<LimitingAdaptor>(*c.pinned_base, o.pinned_budget);
  c.user = o.user_stream;
  c.communicator = o.communicator ? o.communicator : single_process();
}

}  // namespace

Context Context::cpu(ContextOptions o) {
  auto c = std::make_shared<Impl>();
  c->kind = DeviceKind::cpu;
  c->threads = o.threads > 0 ? o.threads : default_threads();
  c->name = "cpu (" + std::to_string(c->threads) + " thread" + (c->threads == 1 ? "" : "s") + ")";
  c->note = "cpu requested";
  c->base = std::make_unique<HostResource>();
  finish(*c, o, host_memory_bytes(), host_available_bytes());
  Context ctx(c);
  if (o.memory_budget > 0 && host_available_bytes() > 0 && o.memory_budget > host_available_bytes())
    ctx.warn("memory budget " + format_bytes(o.memory_budget) + " exceeds the free host memory " +
             format_bytes(host_available_bytes()));
  return ctx;
}

Context Context::cuda(int device, ContextOptions o) {
  std::string why;
  const int count = detail::cuda_device_count(why);
  if (count == 0) throw DeviceError("no usable CUDA device (" + why + "); use --device cpu or auto");
  if (device < 0 || device >= count)
    throw InvalidArgument("CUDA device " + std::to_string(device) + " does not exist: " + std::to_string(count) +
                          " device(s) visible (ids 0.." + std::to_string(count - 1) + ")");
  detail::cuda_set_device(device);
  const DeviceInfo info = detail::cuda_device_info(device);
  auto c = std::make_shared<Impl>();
  c->kind = DeviceKind::cuda;
  c->device = device;
  c->threads = default_threads();
  c->name = "cuda:" + std::to_string(device) + " " + info.name;
  c->note = "cuda:" + std::to_string(device) + " requested";
  c->compute = detail::cuda_stream_create();
  c->copy = detail::cuda_stream_create();
  // The pool orders stream-less allocations on the compute stream (cuda/cuda_runtime.cpp).
  c->base = detail::make_cuda_async_resource(device, c->compute);
  finish(*c, o, info.total_bytes, info.free_bytes);
  Context ctx(c);
  if (o.memory_budget > info.free_bytes)
    ctx.warn("memory budget " + format_bytes(o.memory_budget) + " exceeds the free device memory " +
             format_bytes(info.free_bytes));
  return ctx;
}

Context Context::automatic(ContextOptions o) {
  std::string why;
  if (detail::cuda_device_count(why) > 0) {
    try {
      Context ctx = cuda(0, o);
      ctx.impl_->note = "auto picked " + ctx.device_name() + " (a CUDA device works)";
      return ctx;
    } catch (const Error& e) {
      why = e.what();
    }
  }
  Context ctx = cpu(o);
  ctx.impl_->note = "auto picked the cpu: " + why;
  return ctx;
}

Context Context::from_string(const std::string& device, ContextOptions o) {
  if (device == "auto") return automatic(o);
  if (device == "cpu") return cpu(o);
  if (device == "cuda") return cuda(0, o);
  if (device.rfind("cuda:", 0) == 0) {
    const std::string id = device.substr(5);
    if (!id.empty() && id.find_first_not_of("0123456789") == std::string::npos) {
      int n = 0;
      const auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), n);
      if (ec != std::errc() || end != id.data() + id.size())
        throw InvalidArgument("device '" + device + "': the id is too large to be a CUDA device; use cuda:N with N " +
                              "from 0 to the number of devices - 1 (otcal info lists them)");
      return cuda(n, o);
    }
  }
  throw InvalidArgument("device '" + device + "' is not one of auto, cpu, cuda, cuda:N");
}

Context Context::distributed(std::shared_ptr<Communicator> comm, const std::string& device, ContextOptions o) {
  if (!comm) throw InvalidArgument("Context::distributed needs a communicator (otcal::mpi_communicator)");
  o.communicator = comm;
  std::string why;
  const int count = device == "cpu" ? 0 : detail::cuda_device_count(why);
  Context ctx = (device == "cuda" || device == "auto") && count > 0 ? cuda(comm->local_rank() % count, o)
                : device == "cuda" ? cuda(0, o)  // names why no device is usable
                : device == "auto" ? cpu(o)
                                   : from_string(device, o);
  if (ctx.kind() == DeviceKind::cuda) comm->bind_device(ctx.device_id());
  ctx.impl_->note += " (rank " + std::to_string(comm->rank()) + " of " + std::to_string(comm->size()) + ", " +
                     comm->description() + ")";
  return ctx;
}

DeviceKind Context::kind() const { return impl_->kind; }
int Context::device_id() const { return impl_->device; }
std::string Context::device_name() const { return impl_->name; }
const std::string& Context::selection_note() const { return impl_->note; }
int Context::threads() const { return impl_->threads; }
std::size_t Context::memory_budget() const { return impl_->budget; }
MemoryResource& Context::workspace() const { return *impl_->limited; }
MemoryResource& Context::output() const { return *impl_->output; }
void Context::set_output_resource(MemoryResource* mr) {
  if (mr == nullptr) {
    impl_->output_stats.reset();
    impl_->output = impl_->limited.get();
  } else {
    impl_->output_stats = std::make_unique<StatisticsAdaptor>(*mr);
    impl_->output = impl_->output_stats.get();
  }
}
StatisticsAdaptor& Context::statistics() const { return *impl_->stats; }
LimitingAdaptor& Context::limiter() const { return *impl_->limited; }
MemoryResource& Context::pinned_host() const { return *impl_->pinned; }
StreamHandle Context::compute_stream() const { return impl_->compute; }
StreamHandle Context::copy_stream() const { return impl_->copy; }
StreamHandle Context::user_stream() const { return impl_->user; }

void Context::enter_user_stream() const {
  if (impl_->kind == DeviceKind::cuda && impl_->user != nullptr) detail::cuda_stream_wait(impl_->compute, impl_->user);
}
void Context::exit_user_stream() const {
  if (impl_->kind == DeviceKind::cuda && impl_->user != nullptr) {
    detail::cuda_stream_wait(impl_->user, impl_->compute);
    detail::cuda_stream_wait(impl_->user, impl_->copy);
  }
}
void Context::synchronize() const {
  if (impl_->kind == DeviceKind::cuda) {
    detail::cuda_stream_synchronize(impl_->compute);
    detail::cuda_stream_synchronize(impl_->copy);
  }
}

void Context::warn(const std::string& message) const {
  std::lock_guard<std::mutex> lock(impl_->warn_mutex);
  if (impl_->on_warning) impl_->on_warning(message);
  else std::cerr << "otcal: warning: " << message << "\n";
}

std::uint64_t Context::cloud_uploads() const { return impl_->cloud_uploads.load(); }
Communicator& Context::communicator() const { return *impl_->communicator; }
bool Context::distributed() const { return impl_->communicator->size() > 1; }

namespace detail {

void count_cloud_upload(const Context& ctx) { ++ctx.impl().cloud_uploads; }

template <class T>
Backend<T>& backend(const Context& ctx) {
  Context::Impl& c = ctx.impl();
  std::lock_guard<std::mutex> lock(c.backend_mutex);
  auto& slot = [&]() -> std::unique_ptr<Backend<T>>& {
    if constexpr (std::is_same_v<T, float>) return c.backend32;
    else return c.backend64;
  }();
  if (!slot) {
    // A view that does not own the Impl: the backend lives inside it, so an owning handle would
    // keep the context alive forever.
    const Context view(std::shared_ptr<Context::Impl>(std::shared_ptr<Context::Impl>{}, &c));
    slot = c.kind == DeviceKind::cuda ? make_cuda_backend<T>(view) : make_cpu_backend<T>(view);
  }
  return *slot;
}

template Backend<float>& backend<float>(const Context&);
template Backend<double>& backend<double>(const Context&);

ThreadScope::ThreadScope(int threads) {
#ifdef _OPENMP
  previous_ = omp_get_max_threads();
  if (threads > 0) omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

ThreadScope::~ThreadScope() {
#ifdef _OPENMP
  omp_set_num_threads(previous_);
#endif
}

}  // namespace detail

SystemInfo system_info() {
  SystemInfo s;
  s.built_with_cuda = detail::cuda_built();
  s.cuda_runtime_version = detail::cuda_runtime_version();
  std::string why;
  const int count = detail::cuda_device_count(why);
  s.cuda_status = count > 0 ? "ok" : why;
  for (int i = 0; i < count; ++i) s.devices.push_back(detail::cuda_device_info(i));
  s.cpu_threads = default_threads();
  s.host_memory_bytes = host_memory_bytes();
  return s;
}

PinnedHostResource::PinnedHostResource() {
  std::string why;
  pinned_ = detail::cuda_built() && detail::cuda_device_count(why) > 0;
}

void* PinnedHostResource::do_allocate(StreamHandle s, std::size_t bytes, std::size_t alignment) {
  if (pinned_) {
    if (void* p = detail::cuda_pinned_alloc(bytes)) return p;
  }
  // Pinned allocation failed or is unavailable: pageable memory, remembered for deallocation.
  HostResource host;
  void* p = host.allocate(s, bytes, alignment);
  std::lock_guard<std::mutex> lock(mutex_);
  pageable_.insert(p);
  return p;
}

void PinnedHostResource::do_deallocate(StreamHandle s, void* p, std::size_t bytes, std::size_t alignment) noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pageable_.erase(p) == 0) {
      detail::cuda_pinned_free(p);
      return;
    }
  }
  HostResource host;
  host.deallocate(s, p, bytes, alignment);
}

}  // namespace otcal
