#include "transport/transport.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "runtime/base/log.h"
#include "transport/endpoint_base.h"

extern "C" const janus_transport_v1_t* janus_transport_find_v1(const char* name) {
  if (name == nullptr) return nullptr;
  for (const janus_transport_v1_t* t :
       {&janus_transport_inproc_v1, &janus_transport_shm_v1, &janus_transport_tcp_v1, &janus_transport_verbs_v1})
    if (std::strcmp(t->name, name) == 0) return t;
  return nullptr;
}

namespace janus::transport {

// -- shared endpoint state ----------------------------------------------------------------

const char* drop_reason_name(DropReason r) {
  switch (r) {
    case DropReason::kTruncated: return "truncated";
    case DropReason::kMalformed: return "malformed";
    case DropReason::kSizeMismatch: return "size mismatch";
    case DropReason::kUnknownSender: return "unknown sender";
    case DropReason::kWrongEpoch: return "wrong epoch";
  }
  return "?";
}

std::string& thread_last_error() {
  thread_local std::string message;
  return message;
}

int fail_thread(int code, std::string message) {
  thread_last_error() = std::move(message);
  return code;
}

void EndpointBase::drop(DropReason reason, uint64_t tag, const std::string& why) {
  uint64_t* counter = nullptr;
  switch (reason) {
    case DropReason::kTruncated: counter = &counters.dropped_truncated; break;
    case DropReason::kMalformed: counter = &counters.dropped_malformed; break;
    case DropReason::kSizeMismatch: counter = &counters.dropped_size_mismatch; break;
    case DropReason::kUnknownSender: counter = &counters.dropped_unknown_sender; break;
    case DropReason::kWrongEpoch: counter = &counters.dropped_wrong_epoch; break;
  }
  const uint64_t n = ++*counter;
  if (n <= 10 || n % 1000 == 0)
    log_error(who, std::string("dropped a frame (") + drop_reason_name(reason) + ") under tag " + std::to_string(tag) +
                       ": " + why + " [" + std::to_string(n) + " so far]");
}

// -- the C++ wrapper ------------------------------------------------------------------------

Status status_from_result(int result, const std::string& what) {
  switch (result) {
    case JANUS_TRANSPORT_OK: return Status::Ok();
    case JANUS_TRANSPORT_AGAIN: return resource_exhausted(what + " (try again after progress)");
    case JANUS_TRANSPORT_INVALID: return invalid_argument(what);
    case JANUS_TRANSPORT_NOT_FOUND: return not_found(what);
    case JANUS_TRANSPORT_UNSUPPORTED: return unsupported(what);
    case JANUS_TRANSPORT_UNAVAILABLE: return unavailable(what);
    case JANUS_TRANSPORT_IO: return io_error(what);
    default: return internal_error(what + " (result " + std::to_string(result) + ")");
  }
}

Result<std::unique_ptr<Endpoint>> Endpoint::open(const std::string& name, const EndpointConfig& config) {
  const janus_transport_v1_t* t = janus_transport_find_v1(name.c_str());
  if (t == nullptr) return not_found("no transport named '" + name + "' (inproc, shm, tcp, verbs)");
  return open(t, config);
}

Result<std::unique_ptr<Endpoint>> Endpoint::open(const janus_transport_v1_t* table, const EndpointConfig& config) {
  int rc = table->init();
  if (rc != JANUS_TRANSPORT_OK)
    return status_from_result(rc, std::string("transport ") + table->name + ": " + table->last_error(nullptr));
  janus_transport_config_v1_t c{};
  c.self_id = config.self_id;
  c.epoch = config.epoch;
  c.bind_host = config.bind_host.empty() ? nullptr : config.bind_host.c_str();
  c.bind_port = config.bind_port.empty() ? nullptr : config.bind_port.c_str();
  c.advertise_host = config.advertise_host.empty() ? nullptr : config.advertise_host.c_str();
  c.max_inflight = config.max_inflight;
  void* ep = nullptr;
  rc = table->listen(&c, &ep);
  if (rc != JANUS_TRANSPORT_OK)
    return status_from_result(rc, std::string("transport ") + table->name + " listen: " + table->last_error(nullptr));
  return std::unique_ptr<Endpoint>(new Endpoint(table, ep, config.self_id));
}

Endpoint::~Endpoint() {
  if (ep_ != nullptr) table_->close(ep_);
}

Status Endpoint::check(int result, const char* what) const {
  if (result == JANUS_TRANSPORT_OK) return Status::Ok();
  return status_from_result(result, std::string("transport ") + table_->name + " " + what + ": " + table_->last_error(ep_));
}

Result<std::vector<char>> Endpoint::address() const {
  std::vector<char> buf(256);
  size_t len = buf.size();
  int rc = table_->address(ep_, buf.data(), &len);
  if (rc == JANUS_TRANSPORT_INVALID && len > buf.size()) {
    buf.resize(len);
    rc = table_->address(ep_, buf.data(), &len);
  }
  JANUS_TRY(check(rc, "address"));
  buf.resize(len);
  return buf;
}

Result<Peer> Endpoint::connect(const std::vector<char>& address, uint32_t peer_id) {
  Peer p = 0;
  JANUS_TRY(check(table_->connect(ep_, address.data(), address.size(), peer_id, &p), "connect"));
  return p;
}

Result<void*> Endpoint::register_memory(void* buf, size_t len) {
  void* mr = nullptr;
  JANUS_TRY(check(table_->reg_mr(ep_, buf, len, &mr), "reg_mr"));
  return mr;
}

Status Endpoint::deregister_memory(void* mr) { return check(table_->dereg_mr(ep_, mr), "dereg_mr"); }

Status Endpoint::send(Peer peer, uint64_t tag, const void* buf, size_t len, void* user_context, void* mr) {
  return check(table_->isend(ep_, peer, tag, buf, len, mr, user_context), "isend");
}

Status Endpoint::recv(Peer peer, uint64_t tag, void* buf, size_t capacity, void* user_context, void* mr) {
  return check(table_->irecv(ep_, peer, tag, buf, capacity, mr, user_context), "irecv");
}

Result<int> Endpoint::poll(Completion* out, int max) {
  int n = 0;
  JANUS_TRY(check(table_->progress(ep_, out, max, &n), "progress"));
  return n;
}

Status Endpoint::wait(std::vector<Completion>& out, size_t n, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  Completion batch[32];
  int spins = 0;
  while (out.size() < n) {
    const int want = static_cast<int>(std::min<size_t>(32, n - out.size()));
    JANUS_ASSIGN_OR_RETURN(int got, poll(batch, want));
    out.insert(out.end(), batch, batch + got);
    if (got == 0 && ++spins % 1024 == 0 && std::chrono::steady_clock::now() > deadline)
      return unavailable("transport " + std::string(table_->name) + ": " + std::to_string(out.size()) + " of " +
                         std::to_string(n) + " completions after " + std::to_string(timeout_s) + " s");
  }
  return Status::Ok();
}

Status Endpoint::release(uint64_t loan) { return check(table_->release(ep_, loan), "release"); }

Status Endpoint::set_epoch(uint32_t epoch) { return check(table_->set_epoch(ep_, epoch), "set_epoch"); }

Counters Endpoint::counters() const {
  Counters c{};
  table_->get_counters(ep_, &c);
  return c;
}

Status Endpoint::inject_raw(Peer peer, uint64_t tag, const void* bytes, size_t len) {
  return check(table_->inject_raw(ep_, peer, tag, bytes, len), "inject_raw");
}

}  // namespace janus::transport
