// Communicator over MPI, with NCCL for device buffers where the build has it.
#include "otcal/mpi.hpp"

#include <cstring>
#include <numeric>

#include "core/cuda_runtime.hpp"
#include "otcal/errors.hpp"

#ifdef OTCAL_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace otcal {
namespace {

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(std::string("MPI ") + what + " failed: " + std::string(text, static_cast<std::size_t>(len)));
}

MPI_Datatype mpi_type(DType t) { return t == DType::float32 ? MPI_FLOAT : MPI_DOUBLE; }

// Messages above this are split, so counts stay within MPI's int.
constexpr std::size_t kMaxMessage = std::size_t{1} << 30;

#ifdef OTCAL_WITH_NCCL
void nccl_check(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) throw DeviceError(std::string("NCCL ") + what + " failed: " + ncclGetErrorString(rc));
}
#endif

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm parent) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) throw InvalidArgument("mpi_communicator: call MPI_Init before making an otcal communicator");
    check(MPI_Comm_dup(parent, &comm_), "Comm_dup");
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm node;
    check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node), "Comm_split_type");
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_free(&node);
  }
  ~MpiCommunicator() override {
#ifdef OTCAL_WITH_NCCL
    if (nccl_) ncclCommDestroy(nccl_);
#endif
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  std::string description() const override {
    return std::string(nccl_ready() ? "MPI + NCCL" : "MPI") + " (" + std::to_string(size_) + " rank" +
           (size_ == 1 ? "" : "s") + ")";
  }

  void all_gather_in_place(void* buf, DType dtype, const std::vector<index_t>& counts, BufferPlace place,
                           StreamHandle stream) override {
    if (static_cast<int>(counts.size()) != size_)
      throw InvalidArgument("all_gather_in_place: one count per rank is needed");
    const std::size_t value = dtype_size(dtype);
    const index_t total = std::accumulate(counts.begin(), counts.end(), index_t{0});
    if (size_ == 1 || total == 0) return;
    if (place == BufferPlace::device) {
#ifdef OTCAL_WITH_NCCL
      if (nccl_) {
        // Each rank broadcasts its piece into place: NCCL's all-gather needs equal counts.
        nccl_check(ncclGroupStart(), "group start");
        index_t offset = 0;
        char* base = static_cast<char*>(buf);
        for (int r = 0; r < size_; ++r) {
          const auto count = static_cast<std::size_t>(counts[static_cast<std::size_t>(r)]);
          char* piece = base + static_cast<std::size_t>(offset) * value;
          if (count > 0)
            nccl_check(ncclBroadcast(piece, piece, count, dtype == DType::float32 ? ncclFloat32 : ncclFloat64, r,
                                     nccl_, static_cast<cudaStream_t>(stream)),
                       "broadcast");
          offset += counts[static_cast<std::size_t>(r)];
        }
        nccl_check(ncclGroupEnd(), "group end");
        return;
      }
#endif
      (void)stream;
      std::vector<char> staging(static_cast<std::size_t>(total) * value);
      detail::cuda_stream_synchronize(stream);
      detail::cuda_copy_to_host(staging.data(), buf, staging.size());
      host_all_gather(staging.data(), dtype, counts);
      detail::cuda_copy_to_device(buf, staging.data(), staging.size());
      return;
    }
    host_all_gather(buf, dtype, counts);
  }

  std::vector<std::uint64_t> all_gather_word(std::uint64_t word) override {
    std::vector<std::uint64_t> out(static_cast<std::size_t>(size_));
    check(MPI_Allgather(&word, 1, MPI_UINT64_T, out.data(), 1, MPI_UINT64_T, comm_), "Allgather");
    return out;
  }
  void all_sum(std::uint64_t* values, std::size_t count) override {
    for (std::size_t done = 0; done < count;) {
      const std::size_t chunk = std::min(count - done, kMaxMessage / 8);
      check(MPI_Allreduce(MPI_IN_PLACE, values + done, static_cast<int>(chunk), MPI_UINT64_T, MPI_SUM, comm_),
            "Allreduce");
      done += chunk;
    }
  }
  double all_min(double v) override {
    check(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MIN, comm_), "Allreduce");
    return v;
  }
  double all_max(double v) override {
    check(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, comm_), "Allreduce");
    return v;
  }
  void broadcast(std::string& bytes, int root) override {
    std::uint64_t n = bytes.size();
    check(MPI_Bcast(&n, 1, MPI_UINT64_T, root, comm_), "Bcast");
    bytes.resize(static_cast<std::size_t>(n));
    for (std::size_t done = 0; done < n;) {
      const std::size_t chunk = std::min<std::size_t>(n - done, kMaxMessage);
      check(MPI_Bcast(bytes.data() + done, static_cast<int>(chunk), MPI_BYTE, root, comm_), "Bcast");
      done += chunk;
    }
  }
  void send(const void* data, std::size_t bytes, int destination) override {
    const char* p = static_cast<const char*>(data);
    std::size_t done = 0;
    do {
      const std::size_t chunk = std::min(bytes - done, kMaxMessage);
      check(MPI_Send(p + done, static_cast<int>(chunk), MPI_BYTE, destination, kTag, comm_), "Send");
      done += chunk;
    } while (done < bytes);
  }
  void receive(void* data, std::size_t bytes, int source) override {
    char* p = static_cast<char*>(data);
    std::size_t done = 0;
    do {
      const std::size_t chunk = std::min(bytes - done, kMaxMessage);
      check(MPI_Recv(p + done, static_cast<int>(chunk), MPI_BYTE, source, kTag, comm_, MPI_STATUS_IGNORE), "Recv");
      done += chunk;
    } while (done < bytes);
  }
  void barrier() override { check(MPI_Barrier(comm_), "Barrier"); }

  void bind_device(int device) override {
#ifdef OTCAL_WITH_NCCL
    if (nccl_) return;
    ncclUniqueId id;
    if (rank_ == 0) nccl_check(ncclGetUniqueId(&id), "GetUniqueId");
    check(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, comm_), "Bcast");
    detail::cuda_set_device(device);
    nccl_check(ncclCommInitRank(&nccl_, size_, id, rank_), "CommInitRank");
#else
    (void)device;
#endif
  }

 private:
  static constexpr int kTag = 7301;

  bool nccl_ready() const {
#ifdef OTCAL_WITH_NCCL
    return nccl_ != nullptr;
#else
    return false;
#endif
  }

  void host_all_gather(void* buf, DType dtype, const std::vector<index_t>& counts) {
    std::vector<int> c(counts.size()), displs(counts.size());
    index_t offset = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      if (counts[r] > index_t{1} << 30 || offset > index_t{1} << 30)
        throw InvalidArgument("all_gather_in_place: more than 2^30 values per rank are not supported by MPI's "
                              "int counts; use more ranks");
      c[r] = static_cast<int>(counts[r]);
      displs[r] = static_cast<int>(offset);
      offset += counts[r];
    }
    check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, c.data(), displs.data(), mpi_type(dtype), comm_),
          "Allgatherv");
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
#ifdef OTCAL_WITH_NCCL
  ncclComm_t nccl_ = nullptr;
#endif
};

}  // namespace

std::shared_ptr<Communicator> mpi_communicator(MPI_Comm comm) { return std::make_shared<MpiCommunicator>(comm); }

}  // namespace otcal
