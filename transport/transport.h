// The data-plane transport: moves tagged payloads between endpoints, apart from CAF.
//
// One interface, several implementations, in the manner of NCCL's network plugins
// (ncclNet_vN_t): a versioned table of plain functions over opaque endpoint handles, each
// member with its contract written next to it. A new version is a new table type; old ones
// stay side by side so callers built against them keep working.
//
//   name      implementation                         moves bytes by
//   inproc    same process                           handing the sender's pointer over (zero copy)
//   shm       libfabric "shm", same host             shared memory; CMA (process_vm_readv) when large
//   tcp       libfabric "tcp;ofi_rxm", any host      TCP sockets (eager, then rendezvous)
//   verbs     libfabric "verbs;ofi_rxm"              RDMA, where a NIC exists (same code as tcp)
//
// What travels: every message is a header frame (schemas/transport_frame.capnp: sender
// id, epoch, tag, byte count; kFrameHeaderBytes) followed by the payload. The receiver
// validates every frame; a frame that is truncated, malformed, from an unknown sender, from
// another epoch, or whose payload size disagrees with its header is dropped, logged,
// counted (janus_transport_counters_v1_t) and the receive it landed in is posted again:
// the endpoint keeps working and the caller never sees the bad frame.
//
// Threading: an endpoint is driven by one thread at a time (libfabric FI_THREAD_DOMAIN);
// in the runtime that is the one actor that owns it. Different endpoints may be driven by
// different threads, inproc ones included.
//
// Memory: payload buffers are registered once and reused (reg_mr, or implicitly by the
// registration cache on first use), never per message. GPU memory is not accepted by
// these transports: transport/staging.h stages it through pinned host buffers.
//
// Identity: a frame is accepted only from a sender id the receiver has connect()ed, so
// both sides of a link connect to each other (addresses travel over the control plane).
//
//   auto ep = Endpoint::open("shm", {.self_id = 3});        // one per owning actor
//   ship((*ep)->address());                                  // control plane, both ways
//   auto peer = (*ep)->connect(address_of_7, 7);
//   (*ep)->register_memory(pool, pool_bytes);                // once
//   (*ep)->recv(*peer, tag, pool + off, cap, ctx);           // post, never blocks
//   (*ep)->send(*peer, tag2, pool + off2, n, ctx2);
//   loop: n = (*ep)->poll(c, 16); handle c[0..n); release(c.loan) after using c.data
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/base/status.h"

extern "C" {

/// Results of every table function. Only JANUS_TRANSPORT_AGAIN is transient.
typedef enum janus_transport_result {
  JANUS_TRANSPORT_OK = 0,
  JANUS_TRANSPORT_AGAIN = 1,        // no room now (max_inflight ops posted): progress, then retry
  JANUS_TRANSPORT_INVALID = 2,      // bad argument: reserved tag bits, unknown peer index, null buffer
  JANUS_TRANSPORT_NOT_FOUND = 3,    // an address, region or loan that does not exist
  JANUS_TRANSPORT_UNSUPPORTED = 4,  // valid, but not by this implementation
  JANUS_TRANSPORT_UNAVAILABLE = 5,  // provider missing on this host, peer gone or unreachable
  JANUS_TRANSPORT_IO = 6,           // the provider failed an operation (see last_error)
  JANUS_TRANSPORT_INTERNAL = 7,     // a broken invariant: a bug in Janus
} janus_transport_result_t;

/// Index of a connected peer in an endpoint's peer table (connect() hands it out).
typedef uint32_t janus_peer_t;
#define JANUS_TRANSPORT_ANY_PEER 0xFFFFFFFFu

/// The two most significant tag bits are the transport's own; user tags are below this.
#define JANUS_TRANSPORT_TAG_LIMIT (1ull << 62)

/// Bytes of the header frame in front of every payload.
#define JANUS_TRANSPORT_FRAME_BYTES 64

typedef struct janus_transport_config_v1 {
  uint32_t self_id;            // this endpoint's id in the deployment: written into every frame
  uint32_t epoch;              // membership epoch frames must carry to be accepted
  const char* bind_host;       // IP providers: NULL = "127.0.0.1" (loopback only); "0.0.0.0" = any
  const char* bind_port;       // IP providers: NULL = an ephemeral port
  const char* advertise_host;  // bound to any: the IPv4 address peers should dial (NULL: as bound)
  uint32_t max_inflight;       // sends + receives posted and not yet completed; 0 = 1024
} janus_transport_config_v1_t;

typedef enum janus_transport_op {
  JANUS_TRANSPORT_OP_SEND = 1,
  JANUS_TRANSPORT_OP_RECV = 2,
} janus_transport_op_t;

/// One finished send or receive, as progress() hands it out.
typedef struct janus_transport_completion_v1 {
  void* user_context;  // as given to isend / irecv
  void* data;          // recv: where the payload is (the posted buffer, or the sender's: see loan)
                       // send: the buffer that was sent
  uint64_t tag;        // the transfer tag
  uint64_t bytes;      // payload bytes sent or received (the header frame not counted)
  uint64_t loan;       // recv, nonzero: data points into the sender's memory (inproc, zero
                       // copy); it stays valid, and the sender's send pending, until release(loan)
  uint32_t peer_id;    // recv: the sender's id; send: the destination's id
  uint32_t epoch;      // recv: the epoch in the frame; send: the epoch it was sent in
  int32_t op;          // janus_transport_op_t
  int32_t result;      // JANUS_TRANSPORT_OK, or why the operation failed (buffer returned to you)
} janus_transport_completion_v1_t;

/// Per-endpoint counters. Dropped frames are counted by reason.
typedef struct janus_transport_counters_v1 {
  uint64_t sends_posted, sends_completed, recvs_posted, recvs_completed;
  uint64_t bytes_sent, bytes_received;       // payload bytes of completed operations
  uint64_t registrations;                    // user memory regions registered (explicit + cache misses)
  uint64_t registration_hits;                // posts whose buffer was found already registered
  uint64_t eagain;                           // provider -FI_EAGAIN answers, retried after progress
  uint64_t backlogged;                       // posts queued to be retried by progress()
  uint64_t split_messages;                   // messages sent as header + payload messages (shm)
  uint64_t dropped_truncated;                // shorter than a frame, or longer than the posted buffer
  uint64_t dropped_malformed;                // not a valid frame (Cap'n Proto, magic, version, tag)
  uint64_t dropped_size_mismatch;            // payload bytes != the frame's byte count
  uint64_t dropped_unknown_sender;           // sender id not connected (or not the one asked for)
  uint64_t dropped_wrong_epoch;              // epoch != the endpoint's epoch
} janus_transport_counters_v1_t;

/// Version 1 of the transport interface. Every function returns a janus_transport_result_t
/// and never blocks, except where a member says otherwise. `ep` is the handle listen()
/// returned; handles of one table must not be passed to another.
typedef struct janus_transport_v1 {
  /// "inproc", "shm", "tcp", "verbs".
  const char* name;

  /// Checks that this transport can work in this process (the provider exists on this host).
  /// Idempotent, cheap after the first call; UNAVAILABLE when it cannot. May block briefly
  /// (provider discovery).
  int (*init)(void);

  /// Opens an endpoint that peers can reach: the "listen" side and the "connect" side are the
  /// same object (reliable datagram endpoints, no per-peer connection objects). May block
  /// briefly (provider setup). On success *ep is set; close() it.
  int (*listen)(const janus_transport_config_v1_t* config, void** ep);

  /// The endpoint's address: opaque bytes another endpoint passes to connect() (they travel
  /// over the control plane). *len in: capacity of buf; out: bytes written. INVALID when too
  /// small (with *len set to the size needed).
  int (*address)(void* ep, void* buf, size_t* len);

  /// Makes the endpoint at `address` a peer whose frames carry `peer_id`; *peer is its index
  /// for isend/irecv. Does not wait for the peer (connections, where the provider has them,
  /// are made on first use). INVALID for a malformed address or a peer_id already connected.
  int (*connect)(void* ep, const void* address, size_t len, uint32_t peer_id, janus_peer_t* peer);

  /// Registers [buf, buf + len) for sends and receives; *mr is its handle. Register pools once:
  /// posts find the region by address (a registration cache keyed by buffer range), and a post
  /// into unregistered memory registers it on first use and keeps it until dereg_mr or close.
  /// May block briefly (pinning pages on RDMA providers).
  int (*reg_mr)(void* ep, void* buf, size_t len, void** mr);

  /// Forgets a region reg_mr returned. No operation on it may be outstanding.
  int (*dereg_mr)(void* ep, void* mr);

  /// Posts a send of [buf, buf + len) to `peer` under `tag` (< JANUS_TRANSPORT_TAG_LIMIT).
  /// Never blocks. The transport owns buf until the send's completion comes out of progress();
  /// do not modify or free it before. `mr` may be NULL (found by the registration cache).
  /// AGAIN when max_inflight operations are posted; provider back-pressure (-FI_EAGAIN) is
  /// not an error: the send is accepted and issued by a later progress() call, in order.
  /// Sends from one endpoint to one peer are delivered in the order they were posted.
  /// libfabric transports take payloads up to 1 GiB (INVALID beyond).
  int (*isend)(void* ep, janus_peer_t peer, uint64_t tag, const void* buf, size_t len, void* mr,
               void* user_context);

  /// Posts a receive of a payload of at most `capacity` bytes under `tag`, from `peer` or from
  /// JANUS_TRANSPORT_ANY_PEER. Never blocks. The transport owns buf until the completion;
  /// receives with one tag match messages in the order they were posted. A frame that fails
  /// validation is dropped and the receive stays posted (buf's contents are then undefined).
  /// AGAIN as isend.
  int (*irecv)(void* ep, janus_peer_t peer, uint64_t tag, void* buf, size_t capacity, void* mr,
               void* user_context);

  /// Drives the endpoint (reads the provider's completion queue, which on libfabric is also
  /// what moves bytes: manual progress), retries back-pressured posts, validates arrived
  /// frames, and writes up to `max` finished operations to out; *n = how many. Never blocks.
  /// Call it often: nothing moves between calls.
  int (*progress)(void* ep, janus_transport_completion_v1_t* out, int max, int* n);

  /// Ends a receive completion's loan (completion.loan != 0): the receiver is done with
  /// completion.data, and the sender's send completes. A no-op result for loan 0.
  int (*release)(void* ep, uint64_t loan);

  /// Sets the epoch that incoming frames must carry and that outgoing frames carry.
  int (*set_epoch)(void* ep, uint32_t epoch);

  int (*get_counters)(void* ep, janus_transport_counters_v1_t* out);

  /// Tests and fault injection: sends `len` raw bytes to `peer` under `tag` as one message,
  /// exactly as given (a frame or garbage). The bytes are copied; never blocks; no completion.
  int (*inject_raw)(void* ep, janus_peer_t peer, uint64_t tag, const void* bytes, size_t len);

  /// A message about the last failure on `ep` (NULL: the last init/listen failure on this
  /// thread). Valid until the next call on ep.
  const char* (*last_error)(void* ep);

  /// Closes the endpoint: outstanding operations are cancelled without completions, buffers
  /// return to their owners, addresses it handed out stop working. Loans it made must have
  /// been released (the receiver may still read them otherwise). May block briefly.
  int (*close)(void* ep);
} janus_transport_v1_t;

extern const janus_transport_v1_t janus_transport_inproc_v1;
extern const janus_transport_v1_t janus_transport_shm_v1;
extern const janus_transport_v1_t janus_transport_tcp_v1;
extern const janus_transport_v1_t janus_transport_verbs_v1;

/// The table named `name` ("inproc", "shm", "tcp", "verbs"), or NULL.
const janus_transport_v1_t* janus_transport_find_v1(const char* name);

}  // extern "C"

namespace janus::transport {

using Completion = janus_transport_completion_v1_t;
using Counters = janus_transport_counters_v1_t;
using Peer = janus_peer_t;
constexpr Peer kAnyPeer = JANUS_TRANSPORT_ANY_PEER;
constexpr uint64_t kTagLimit = JANUS_TRANSPORT_TAG_LIMIT;

/// The Status for a table result code; `what` says which call and what about.
Status status_from_result(int result, const std::string& what);

struct EndpointConfig {
  uint32_t self_id = 0;
  uint32_t epoch = 0;
  std::string bind_host;       // empty: loopback
  std::string bind_port;       // empty: ephemeral
  std::string advertise_host;  // empty: the bound address
  uint32_t max_inflight = 0;   // 0: 1024
};

/// A thin owner over one endpoint of one table: errors become Status, close() runs in the
/// destructor. Same threading and ownership contracts as the table.
class Endpoint {
 public:
  /// Opens an endpoint of transport `name` ("inproc", "shm", "tcp", "verbs").
  static Result<std::unique_ptr<Endpoint>> open(const std::string& name, const EndpointConfig& config);
  static Result<std::unique_ptr<Endpoint>> open(const janus_transport_v1_t* table, const EndpointConfig& config);
  ~Endpoint();
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  const janus_transport_v1_t& table() const { return *table_; }
  void* handle() const { return ep_; }
  uint32_t self_id() const { return self_id_; }

  /// The address to hand to peers (over the control plane).
  Result<std::vector<char>> address() const;
  Result<Peer> connect(const std::vector<char>& address, uint32_t peer_id);
  Result<void*> register_memory(void* buf, size_t len);
  Status deregister_memory(void* mr);

  /// Post; AGAIN comes back as resource_exhausted (progress, then retry).
  Status send(Peer peer, uint64_t tag, const void* buf, size_t len, void* user_context = nullptr,
              void* mr = nullptr);
  Status recv(Peer peer, uint64_t tag, void* buf, size_t capacity, void* user_context = nullptr,
              void* mr = nullptr);

  /// Up to out.size() completions; returns how many.
  Result<int> poll(Completion* out, int max);
  /// Polls until `n` completions arrived into `out` or `timeout_s` passed (tests, tools).
  Status wait(std::vector<Completion>& out, size_t n, double timeout_s);
  Status release(uint64_t loan);
  Status set_epoch(uint32_t epoch);
  Counters counters() const;
  Status inject_raw(Peer peer, uint64_t tag, const void* bytes, size_t len);

 private:
  Endpoint(const janus_transport_v1_t* table, void* ep, uint32_t self_id)
      : table_(table), ep_(ep), self_id_(self_id) {}
  Status check(int result, const char* what) const;

  const janus_transport_v1_t* table_;
  void* ep_;
  uint32_t self_id_;
};

}  // namespace janus::transport
