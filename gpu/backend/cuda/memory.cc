#include "gpu/backend/cuda/memory.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <tuple>

#include "gpu/cuda/device.h"
#include "runtime/base/parallel.h"

namespace janus::cuda {

// -- DeviceGuard ------------------------------------------------------------------------

DeviceGuard::DeviceGuard(int device) : device_(device) {
  if (cudaGetDevice(&previous_) != cudaSuccess) {
    cudaGetLastError();
    previous_ = -1;
  }
  if (previous_ != device_) {
    cudaError_t e = cudaSetDevice(device_);
    if (e != cudaSuccess) status_ = cuda_status(e, "cudaSetDevice", __FILE__, __LINE__);
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0 && previous_ != device_) cudaSetDevice(previous_);
}

// -- DevicePool ---------------------------------------------------------------------------

std::shared_ptr<DevicePool> DevicePool::create(int device) { return std::shared_ptr<DevicePool>(new DevicePool(device)); }

DevicePool::~DevicePool() { trim(); }

size_t DevicePool::size_class(size_t bytes) {
  if (bytes <= 256) return 256;
  // Four classes per power of two: at most 25% rounding waste.
  size_t p = 1;
  while (p * 2 <= bytes) p *= 2;
  const size_t step = std::max<size_t>(p / 4, 256);
  return (bytes + step - 1) / step * step;
}

Result<std::shared_ptr<void>> DevicePool::alloc(size_t bytes) {
  const size_t cls = size_class(bytes);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++stats_.allocations;
    auto it = free_.find(cls);
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      stats_.in_use_bytes += cls;
    }
  }
  if (p == nullptr) {
    DeviceGuard g(device_);
    JANUS_TRY(g.status());
    cudaError_t e = cudaMalloc(&p, cls);
    if (e != cudaSuccess) {
      cudaGetLastError();
      trim();  // give the cached blocks back to the driver and try once more
      e = cudaMalloc(&p, cls);
      if (e != cudaSuccess) {
        cudaGetLastError();
        return resource_exhausted("cuda:" + std::to_string(device_) + ": cannot allocate " + std::to_string(cls) +
                                  " bytes of device memory (" + cudaGetErrorString(e) + "); the pool holds " +
                                  std::to_string(stats().reserved_bytes) + " bytes");
      }
    }
    std::lock_guard<std::mutex> lk(mu_);
    ++stats_.misses;
    stats_.reserved_bytes += cls;
    stats_.in_use_bytes += cls;
  }
  std::shared_ptr<DevicePool> self = shared_from_this();
  return std::shared_ptr<void>(p, [self, cls](void* q) { self->give_back(q, cls); });
}

void DevicePool::give_back(void* p, size_t cls) {
  std::lock_guard<std::mutex> lk(mu_);
  free_[cls].push_back(p);
  stats_.in_use_bytes -= cls;
}

DevicePool::Stats DevicePool::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void DevicePool::trim() {
  std::unordered_map<size_t, std::vector<void*>> blocks;
  {
    std::lock_guard<std::mutex> lk(mu_);
    blocks.swap(free_);
    for (const auto& [cls, v] : blocks) stats_.reserved_bytes -= cls * v.size();
  }
  if (blocks.empty()) return;
  DeviceGuard g(device_);
  for (auto& [cls, v] : blocks)
    for (void* p : v) cudaFree(p);
}

std::shared_ptr<DevicePool> shared_pool(int device) {
  static std::mutex mu;
  static auto* pools = new std::map<int, std::shared_ptr<DevicePool>>();  // never destroyed
  std::lock_guard<std::mutex> lk(mu);
  auto& p = (*pools)[device];
  if (!p) p = DevicePool::create(device);
  return p;
}

// -- PinnedArena --------------------------------------------------------------------------

PinnedArena::~PinnedArena() {
  for (Chunk& c : chunks_) cudaFreeHost(c.data);
}

Result<void*> PinnedArena::take(size_t bytes) {
  bytes = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
  high_water_ += bytes;
  if (chunks_.empty() || chunks_.back().bytes - chunks_.back().used < bytes) {
    Chunk c;
    c.bytes = std::max<size_t>({bytes, size_t{1} << 20, chunks_.empty() ? 0 : chunks_.back().bytes * 2});
    void* p = nullptr;
    cudaError_t e = cudaHostAlloc(&p, c.bytes, cudaHostAllocPortable);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return resource_exhausted("cannot allocate " + std::to_string(c.bytes) + " bytes of pinned host memory: " +
                                cudaGetErrorString(e));
    }
    c.data = static_cast<char*>(p);
    chunks_.push_back(c);
  }
  Chunk& c = chunks_.back();
  void* out = c.data + c.used;
  c.used += bytes;
  return out;
}

void PinnedArena::reset() {
  if (chunks_.size() > 1) {
    // Merge into one chunk as large as the last call needed, so the next one fits.
    const size_t want = high_water_;
    for (Chunk& c : chunks_) cudaFreeHost(c.data);
    chunks_.clear();
    void* p = nullptr;
    if (cudaHostAlloc(&p, want, cudaHostAllocPortable) == cudaSuccess) chunks_.push_back({static_cast<char*>(p), want, 0});
    else cudaGetLastError();
  }
  for (Chunk& c : chunks_) c.used = 0;
  high_water_ = 0;
}

// -- pinned blocks ------------------------------------------------------------------------

namespace {
struct PinnedBlockPool {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free;  // size class -> blocks
};
PinnedBlockPool& pinned_pool() {
  static auto* pool = new PinnedBlockPool();  // never destroyed: blocks may outlive static destruction
  return *pool;
}
}  // namespace

Result<std::shared_ptr<void>> pinned_block(size_t bytes) {
  const size_t cls = DevicePool::size_class(bytes);
  PinnedBlockPool& pool = pinned_pool();
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lk(pool.mu);
    auto& v = pool.free[cls];
    if (!v.empty()) {
      p = v.back();
      v.pop_back();
    }
  }
  if (p == nullptr) JANUS_CUDA_TRY(cudaHostAlloc(&p, cls, cudaHostAllocPortable));
  return std::shared_ptr<void>(p, [cls](void* q) {
    PinnedBlockPool& pl = pinned_pool();
    std::lock_guard<std::mutex> lk(pl.mu);
    pl.free[cls].push_back(q);
  });
}

// -- completion markers -------------------------------------------------------------------

namespace {

struct StreamEvent {
  cudaEvent_t event = nullptr;
  int device = 0;
};

struct EventPool {
  std::mutex mu;
  std::map<int, std::vector<cudaEvent_t>> free;  // per device
};

EventPool& event_pool() {
  static auto* pool = new EventPool();  // never destroyed: markers may outlive static destruction
  return *pool;
}

}  // namespace

Result<std::shared_ptr<void>> record_stream_event(int device, cudaStream_t stream) {
  EventPool& pool = event_pool();
  cudaEvent_t ev = nullptr;
  {
    std::lock_guard<std::mutex> lk(pool.mu);
    auto& v = pool.free[device];
    if (!v.empty()) {
      ev = v.back();
      v.pop_back();
    }
  }
  if (ev == nullptr) {
    DeviceGuard g(device);
    JANUS_TRY(g.status());
    JANUS_CUDA_TRY(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  }
  auto* m = new StreamEvent{ev, device};
  std::shared_ptr<void> marker(m, [](void* p) {
    auto* e = static_cast<StreamEvent*>(p);
    EventPool& pl = event_pool();
    {
      std::lock_guard<std::mutex> lk(pl.mu);
      pl.free[e->device].push_back(e->event);
    }
    delete e;
  });
  JANUS_CUDA_TRY(cudaEventRecord(ev, stream));
  return marker;
}

cudaEvent_t event_of(const std::shared_ptr<void>& marker) {
  return marker ? static_cast<const StreamEvent*>(marker.get())->event : nullptr;
}

Status stream_wait_ready(const Tensor& t, cudaStream_t stream) {
  if (!t.ready) return Status::Ok();
  JANUS_CUDA_TRY(cudaStreamWaitEvent(stream, event_of(t.ready), 0));
  return Status::Ok();
}

Status host_wait_ready(const Tensor& t) {
  if (!t.ready) return Status::Ok();
  JANUS_CUDA_TRY(cudaEventSynchronize(event_of(t.ready)));
  return Status::Ok();
}

// -- weights ------------------------------------------------------------------------------

DeviceWeight::~DeviceWeight() {
  if (data == nullptr) return;
  DeviceGuard g(device);
  cudaFree(data);
}

DType device_dtype(DType t) { return t == DType::kBF16 ? DType::kBF16 : DType::kF32; }

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Double-buffered upload through pinned memory: the host fills one buffer (several
// threads, converting dtypes on the way) while the other one's copy runs.
class Uploader {
 public:
  static constexpr size_t kChunk = size_t{64} << 20;

  Status upload(int device, void* dst, const void* src, DType src_dtype, DType dst_dtype, size_t elements) {
    JANUS_TRY(ensure(device));
    PerDevice& d = devices_[device];
    const size_t src_size = dtype_size(src_dtype), dst_size = dtype_size(dst_dtype);
    const size_t per_chunk = kChunk / dst_size;
    for (size_t e0 = 0, i = 0; e0 < elements; e0 += per_chunk, ++i) {
      const size_t n = std::min(per_chunk, elements - e0);
      const int b = static_cast<int>(i % 2);
      JANUS_CUDA_TRY(cudaEventSynchronize(d.done[b]));  // the buffer's previous copy finished
      char* stage = pinned_[b];
      const char* from = static_cast<const char*>(src) + e0 * src_size;
      constexpr int64_t kGrain = int64_t{1} << 18;  // elements per task
      parallel_for(static_cast<int64_t>(n), kGrain, [&](int64_t a, int64_t z) {
        if (src_dtype == dst_dtype) {
          std::memcpy(stage + a * dst_size, from + a * src_size, static_cast<size_t>(z - a) * dst_size);
        } else {  // to F32 (F16 or BF16 sources)
          convert_to_f32(from + a * src_size, src_dtype, reinterpret_cast<float*>(stage) + a, static_cast<size_t>(z - a));
        }
      });
      JANUS_CUDA_TRY(cudaMemcpyAsync(static_cast<char*>(dst) + e0 * dst_size, stage, n * dst_size, cudaMemcpyHostToDevice,
                                     d.stream));
      JANUS_CUDA_TRY(cudaEventRecord(d.done[b], d.stream));
    }
    JANUS_CUDA_TRY(cudaStreamSynchronize(d.stream));
    return Status::Ok();
  }

 private:
  struct PerDevice {
    cudaStream_t stream = nullptr;
    cudaEvent_t done[2] = {nullptr, nullptr};
  };

  Status ensure(int device) {
    if (pinned_[0] == nullptr) {
      for (char*& p : pinned_) {
        void* q = nullptr;
        JANUS_CUDA_TRY(cudaHostAlloc(&q, kChunk, cudaHostAllocPortable));
        p = static_cast<char*>(q);
      }
    }
    if (devices_.count(device)) return Status::Ok();
    PerDevice d;
    JANUS_CUDA_TRY(cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking));
    for (auto& e : d.done) {
      JANUS_CUDA_TRY(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      JANUS_CUDA_TRY(cudaEventRecord(e, d.stream));
    }
    devices_[device] = d;
    return Status::Ok();
  }

  char* pinned_[2] = {nullptr, nullptr};  // kept for the life of the process
  std::map<int, PerDevice> devices_;
};

// What a weight's bytes are: for a tensor in a memory-mapped checkpoint (every tensor of a
// loaded Model), the file (device, inode, size, modification time) and the offset in it,
// so that two Model instances of one checkpoint (each deployment loads its own) share one
// device copy; otherwise the address itself.
struct SourceKey {
  int device = 0, dtype = 0;
  int64_t rows = 0, cols = 0;
  const void* address = nullptr;  // not file-backed
  uint64_t fdev = 0, inode = 0, offset = 0;
  int64_t file_size = 0, mtime_ns = 0;
  bool operator<(const SourceKey& o) const {
    return std::tie(device, dtype, rows, cols, address, fdev, inode, offset, file_size, mtime_ns) <
           std::tie(o.device, o.dtype, o.rows, o.cols, o.address, o.fdev, o.inode, o.offset, o.file_size, o.mtime_ns);
  }
};

// Fills the file fields of `k` from /proc/self/maps when `p` lies in a mapping of a file
// that still exists (read afresh at every call: mappings come and go with models).
bool file_source(const void* p, SourceKey* k) {
  FILE* f = std::fopen("/proc/self/maps", "r");
  if (f == nullptr) return false;
  const auto a = reinterpret_cast<uintptr_t>(p);
  char line[4096];
  bool found = false;
  while (std::fgets(line, sizeof line, f)) {
    unsigned long start = 0, end = 0, off = 0, inode = 0;
    unsigned maj = 0, min = 0;
    int pos = 0;
    if (std::sscanf(line, "%lx-%lx %*s %lx %x:%x %lu %n", &start, &end, &off, &maj, &min, &inode, &pos) < 6) continue;
    if (a < start || a >= end) continue;
    if (inode == 0 || pos <= 0) break;
    std::string path(line + pos);
    while (!path.empty() && (path.back() == '\n' || path.back() == ' ')) path.pop_back();
    const std::string deleted = "(deleted)";
    if (path.empty() || path[0] != '/' ||
        (path.size() >= deleted.size() && path.compare(path.size() - deleted.size(), deleted.size(), deleted) == 0))
      break;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || static_cast<unsigned long>(st.st_ino) != inode) break;
    k->fdev = static_cast<uint64_t>(makedev(maj, min));
    k->inode = inode;
    k->offset = off + (a - start);
    k->file_size = static_cast<int64_t>(st.st_size);
    k->mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    found = true;
    break;
  }
  std::fclose(f);
  return found;
}

struct WeightCache {
  std::mutex mu;  // held across an upload: uploads are serialised (each is parallel inside)
  std::map<SourceKey, std::weak_ptr<const DeviceWeight>> entries;
  std::vector<WeightRef> retained;
  bool retain = false;
  std::map<int, size_t> bytes;  // per device, live
  double upload_s = 0;
  Uploader uploader;
};

WeightCache& cache() {
  static auto* c = new WeightCache();  // never destroyed: weights may be released at exit
  return *c;
}

}  // namespace

Result<WeightRef> device_weight(int device, const WeightView& w, DType dtype) {
  if (w.data == nullptr) return internal_error("device_weight: the checkpoint has no such tensor");
  if (dtype != DType::kF32 && dtype != DType::kBF16)
    return unsupported(std::string("device_weight: weights are kept in F32 or BF16 on the GPU, not ") + dtype_name(dtype));
  if (dtype == DType::kBF16 && w.dtype != DType::kBF16)
    return unsupported(std::string("device_weight: a ") + dtype_name(w.dtype) + " tensor is not rounded to BF16 here");
  WeightCache& c = cache();
  std::lock_guard<std::mutex> lk(c.mu);
  SourceKey key;
  key.device = device;
  key.dtype = static_cast<int>(dtype);
  key.rows = w.rows;
  key.cols = w.cols;
  if (!file_source(w.data, &key)) key.address = w.data;
  auto it = c.entries.find(key);
  if (it != c.entries.end())
    if (WeightRef hit = it->second.lock()) return hit;
  DeviceGuard g(device);
  JANUS_TRY(g.status());
  const double t0 = now_s();
  auto* dw = new DeviceWeight();
  dw->dtype = dtype;
  dw->rows = w.rows;
  dw->cols = w.cols;
  dw->device = device;
  const size_t elements = static_cast<size_t>(w.rows * w.cols);
  dw->bytes = elements * dtype_size(dtype);
  cudaError_t e = cudaMalloc(&dw->data, std::max<size_t>(dw->bytes, 1));
  if (e != cudaSuccess) {
    cudaGetLastError();
    dw->data = nullptr;
    delete dw;
    return resource_exhausted("cuda:" + std::to_string(device) + ": cannot allocate " + std::to_string(elements * dtype_size(dtype)) +
                              " bytes for a weight (" + cudaGetErrorString(e) + "); " +
                              std::to_string(c.bytes[device]) + " bytes of weights are on the device already");
  }
  Status up = c.uploader.upload(device, dw->data, w.data, w.dtype, dtype, elements);
  if (!up.ok()) {
    delete dw;
    return up;
  }
  c.bytes[device] += dw->bytes;
  // The deleter runs when the last holder lets go, never under c.mu (holders are
  // released outside it: see retain_weights), so it may take the lock.
  WeightCache* cp = &c;
  WeightRef ref(dw, [cp](const DeviceWeight* p) {
    {
      std::lock_guard<std::mutex> l(cp->mu);
      cp->bytes[p->device] -= p->bytes;
    }
    delete p;
  });
  c.entries[key] = ref;
  if (c.retain) c.retained.push_back(ref);
  c.upload_s += now_s() - t0;
  return ref;
}

void retain_weights(bool on) {
  std::vector<WeightRef> drop;
  {
    WeightCache& c = cache();
    std::lock_guard<std::mutex> lk(c.mu);
    c.retain = on;
    if (!on) drop.swap(c.retained);
  }
  // `drop` goes out of scope here, outside the cache's lock.
}

size_t device_weight_bytes(int device) {
  WeightCache& c = cache();
  std::lock_guard<std::mutex> lk(c.mu);
  auto it = c.bytes.find(device);
  return it == c.bytes.end() ? 0 : it->second;
}

double weight_upload_seconds() {
  WeightCache& c = cache();
  std::lock_guard<std::mutex> lk(c.mu);
  return c.upload_s;
}

}  // namespace janus::cuda
