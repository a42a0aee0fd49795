// PartialGather: collects the replies one layer batch expects and says, once, when the
// batch is complete or has failed. The Router gathers the shards' activations with it
// (EGate), the Scheduler the shards' routed rows (AGate) and the expert instances'
// partial sums.
//
// A batch expects either the slots expect() names (the instances given work), or — in a
// gather restarted with `implicit_slots` > 0 — every slot 0..n-1 (the shards of the
// membership), opening with its first reply. A reply is dropped, with the reason, when
// it is of another epoch, from a slot the batch does not expect or that answered
// already, or, for expected batches, when nobody waits for the batch (never expected,
// completed or failed). An error reply fails its batch at once: the batch is handed out
// with the error, naming the slot, and its later replies are dropped. Only batches in
// flight are held, so memory is bounded by what is open; the price is that a late reply
// for an implicit batch that completed opens a new one (the protocol sends one reply per
// slot and batch).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "actors/protocol/layer_batch_key.h"
#include "runtime/base/status.h"

namespace janus::actors {

enum class GatherOutcome {
  kWaiting,   // taken; the batch waits for more
  kComplete,  // taken; the batch has every reply it expects
  kFailed,    // the reply failed the batch
  kDropped,   // not taken
};

/// The bookkeeping of a gather, whatever its replies carry: who is still due, per batch.
class GatherLedger {
 public:
  /// `sender` names a slot in messages: "shard " gives "shard 3", "expert-" "expert-3".
  explicit GatherLedger(std::string sender) : sender_(std::move(sender)) {}

  /// A new membership: nothing in flight survives.
  void restart(uint32_t epoch, int32_t implicit_slots);
  /// The batch `key` expects replies from `from`, which must not be empty.
  void expect(const LayerBatchKey& key, const std::vector<int32_t>& from);
  /// Marks `from`'s reply for `key`: kWaiting, kComplete (the last one due: the batch is
  /// closed), or kDropped with *why.
  GatherOutcome take(const LayerBatchKey& key, int32_t from, std::string* why);
  /// No reply for `key` is taken any more.
  void close(const LayerBatchKey& key) { due_.erase(key); }

  std::string name(int32_t slot) const { return sender_ + std::to_string(slot); }
  size_t open_batches() const { return due_.size(); }

 private:
  std::string sender_;
  uint32_t epoch_ = 0;
  int32_t implicit_slots_ = 0;
  std::map<LayerBatchKey, std::set<int32_t>> due_;
};

template <class Reply, class Context = std::monostate>
class PartialGather {
 public:
  struct Batch {
    LayerBatchKey key;
    Context context;                   // what expect() was given
    std::map<int32_t, Reply> replies;  // by slot, in slot order
    Status error;                      // kFailed: why, naming the slot
  };

  explicit PartialGather(std::string sender) : ledger_(std::move(sender)) {}

  void restart(uint32_t epoch, int32_t implicit_slots) {
    ledger_.restart(epoch, implicit_slots);
    batches_.clear();
  }

  void expect(const LayerBatchKey& key, const std::vector<int32_t>& from, Context context) {
    ledger_.expect(key, from);
    Batch& b = batches_[key];
    b.key = key;
    b.context = std::move(context);
  }

  /// Offers `from`'s reply for `key`. On kComplete and kFailed the batch is moved to
  /// *done; on kDropped *why says why. `check(context, reply)` may refuse a reply that
  /// arrived well but is wrong for the batch; that fails the batch as an error would.
  template <class Check>
  GatherOutcome offer(const LayerBatchKey& key, int32_t from, Result<Reply> reply, Batch* done, std::string* why, Check&& check) {
    const GatherOutcome taken = ledger_.take(key, from, why);
    if (taken == GatherOutcome::kDropped) return taken;
    auto it = batches_.try_emplace(key).first;
    Batch& b = it->second;
    b.key = key;
    Status ok = reply.ok() ? check(std::as_const(b.context), std::as_const(*reply)) : reply.status();
    if (!ok.ok()) {
      b.error = ok.with_context(ledger_.name(from));
      ledger_.close(key);
    } else {
      b.replies.emplace(from, std::move(*reply));
      if (taken == GatherOutcome::kWaiting) return taken;
    }
    *done = std::move(b);
    batches_.erase(it);
    return ok.ok() ? GatherOutcome::kComplete : GatherOutcome::kFailed;
  }

  GatherOutcome offer(const LayerBatchKey& key, int32_t from, Result<Reply> reply, Batch* done, std::string* why) {
    return offer(key, from, std::move(reply), done, why, [](const Context&, const Reply&) { return Status::Ok(); });
  }

  size_t open_batches() const { return ledger_.open_batches(); }

 private:
  GatherLedger ledger_;
  std::map<LayerBatchKey, Batch> batches_;
};

}  // namespace janus::actors
