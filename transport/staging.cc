#include "transport/staging.h"

#include <cstdlib>
#include <cstring>

namespace janus::transport {
namespace {

void* host_alloc(size_t n) { return std::aligned_alloc(4096, (n + 4095) / 4096 * 4096); }
void host_free(void* p) { std::free(p); }
int host_copy(void* dst, const void* src, size_t n, void*) {
  std::memcpy(dst, src, n);
  return JANUS_TRANSPORT_OK;
}
int host_device_count() { return 1; }

}  // namespace

const StagingCopier* host_copier() {
  static const StagingCopier c{"host", host_alloc, host_free, host_alloc, host_free, host_copy, host_copy,
                               host_device_count};
  return &c;
}

#ifndef JANUS_HAVE_CUDA
const StagingCopier* cuda_copier() { return nullptr; }
#endif

StagingChannel::StagingChannel(Endpoint& endpoint, const StagingCopier& copier, size_t buffer_bytes, int buffers,
                               void* stream)
    : ep_(endpoint), copier_(copier), buffer_bytes_(buffer_bytes), count_(buffers), stream_(stream) {}

StagingChannel::~StagingChannel() {
  for (void* r : regions_) (void)ep_.deregister_memory(r);
  for (Slot& s : slots_)
    if (s.host != nullptr) copier_.free_pinned(s.host);
}

Status StagingChannel::init() {
  if (!slots_.empty()) return Status::Ok();
  if (count_ <= 0 || buffer_bytes_ == 0) return invalid_argument("staging: need at least one non-empty buffer");
  slots_.resize(static_cast<size_t>(count_));
  for (int i = 0; i < count_; ++i) {
    Slot& s = slots_[static_cast<size_t>(i)];
    s.host = copier_.alloc_pinned(buffer_bytes_);
    if (s.host == nullptr)
      return resource_exhausted(std::string("staging: ") + copier_.name + " could not allocate " +
                                std::to_string(buffer_bytes_) + " pinned bytes");
    JANUS_ASSIGN_OR_RETURN(void* mr, ep_.register_memory(s.host, buffer_bytes_));
    regions_.push_back(mr);
    free_.push_back(i);
  }
  return Status::Ok();
}

Status StagingChannel::send(Peer peer, uint64_t tag, const void* device_src, size_t bytes, void* user_context) {
  if (bytes > buffer_bytes_)
    return invalid_argument("staging: payload of " + std::to_string(bytes) + " bytes, buffers hold " +
                            std::to_string(buffer_bytes_));
  if (free_.empty()) return resource_exhausted("staging: every buffer is in flight");
  const int i = free_.back();
  Slot& s = slots_[static_cast<size_t>(i)];
  if (bytes != 0) {
    const int rc = copier_.to_host(s.host, device_src, bytes, stream_);
    if (rc != JANUS_TRANSPORT_OK) return status_from_result(rc, std::string("staging: ") + copier_.name + " to host");
  }
  s.device = const_cast<void*>(device_src);
  s.capacity = bytes;
  s.user_context = user_context;
  JANUS_TRY(ep_.send(peer, tag, s.host, bytes, &s, regions_[static_cast<size_t>(i)]));
  s.busy = true;
  free_.pop_back();
  return Status::Ok();
}

Status StagingChannel::recv(Peer peer, uint64_t tag, void* device_dst, size_t capacity, void* user_context) {
  if (capacity > buffer_bytes_)
    return invalid_argument("staging: receive of " + std::to_string(capacity) + " bytes, buffers hold " +
                            std::to_string(buffer_bytes_));
  if (free_.empty()) return resource_exhausted("staging: every buffer is in flight");
  const int i = free_.back();
  Slot& s = slots_[static_cast<size_t>(i)];
  s.device = device_dst;
  s.capacity = capacity;
  s.user_context = user_context;
  JANUS_TRY(ep_.recv(peer, tag, s.host, capacity, &s, regions_[static_cast<size_t>(i)]));
  s.busy = true;
  free_.pop_back();
  return Status::Ok();
}

Result<int> StagingChannel::poll(Completion* out, int max) {
  JANUS_ASSIGN_OR_RETURN(int n, ep_.poll(out, max));
  const Slot* first = slots_.data();
  const Slot* last = first + slots_.size();
  for (int k = 0; k < n; ++k) {
    Completion& c = out[k];
    auto* s = static_cast<Slot*>(c.user_context);
    if (s < first || s >= last) continue;  // not ours: pass through
    if (c.op == JANUS_TRANSPORT_OP_RECV && c.result == JANUS_TRANSPORT_OK && c.bytes != 0) {
      // c.data is our staging buffer (libfabric) or the sender's (inproc, on loan).
      c.result = copier_.to_device(s->device, c.data, c.bytes, stream_);
    }
    if (c.loan != 0) {
      (void)ep_.release(c.loan);
      c.loan = 0;
    }
    c.data = s->device;
    c.user_context = s->user_context;
    s->busy = false;
    free_.push_back(static_cast<int>(s - first));
  }
  return n;
}

}  // namespace janus::transport
