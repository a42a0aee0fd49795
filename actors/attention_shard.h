// AttentionShard: one data-parallel attention worker on one device.
//
// It owns its requests' KV cache and runs the attention half of every layer for its rows;
// for each MoE layer it ships the post-attention activations to the MoE side (the Router
// under EGate; its own Router under AGate) and waits for the combined expert output of
// those rows before the next layer. Dense layers run here.
//
// A step's rows (new requests' whole prompts, one row per decoding request) are split by
// request into `micro_batches` pieces; micro-batch j of every shard forms layer batch j.
// A step's effects (tokens, finished requests, failures) are committed only when the
// whole step is done here: a membership change that aborts the step mid-way (a member
// died) leaves every request as it was, and the re-run step recomputes the same values.
// A request moved here from another shard resumes by recomputing its prompt and the
// tokens it already produced, which reproduces its KV cache exactly.
// With m >= 2 the shard computes micro-batch j+1's attention while the experts work on
// micro-batch j (MegaScale-Infer's ping-pong); m = 1 is Janus. Shards with no rows still
// take part in every layer batch (with zero rows) so that the MoE side's barrier closes.
#pragma once

#include <map>

#include "actors/actor_common.h"
#include "actors/protocol/layer_exchange.h"
#include "actors/protocol/step.h"

namespace janus::actors {

class AttentionShard : public JanusActor {
 public:
  /// `id` names the actor (attention-<id>); its index in the layer batch is its position
  /// in the current membership.
  AttentionShard(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, int id,
                 std::shared_ptr<AttentionBackend> backend);
  caf::behavior make_behavior() override;

 private:
  struct Running {
    uint64_t id = 0;
    GenerateRequest req;     // a resumed request's prompt includes the tokens it had made
    int seq = -1;            // row of the KV block table
    bool prefilled = false;
    int resumed = 0;         // tokens made elsewhere before it moved here (now in req.prompt)
    int32_t next_token = 0;  // fed at the next step
    int generated = 0;
  };
  struct MicroBatch {
    std::vector<uint64_t> requests;
    std::vector<int64_t> last_row;  // per request: the row whose logits choose its next token
    std::vector<int32_t> tokens;
    std::vector<cpu::KvRow> rows;
    Tensor x, h;
    Tensor shared;  // the shared expert's partial sum of the layer waiting on the MoE side
    int layer = 0;
    bool done = false;
  };

  void begin_step(StepBegin& sb);
  /// Runs micro-batch j from its current layer until it must wait for the MoE side or ends.
  void advance(int j);
  void finish_micro_batch(int j);
  /// Fails the micro-batch's requests; the micro-batch itself goes on with zero rows, so
  /// the other shards' layer batches still close.
  void fail_requests(int j, const Status& why);
  void maybe_end_step();
  void release(uint64_t id);
  /// Applies a finished step's outcomes to the requests and reports them.
  void commit_step();
  /// Its position; a step in flight under an older epoch is aborted; it watches the
  /// MoE side it sends to (the scheduler, its router).
  Status keep(const Membership& next) override;
  const caf::actor& router() const;
  LayerBatchKey key(int j) const { return {step_, mbs_[static_cast<size_t>(j)].layer, j, epoch_}; }

  int index_ = 0;
  std::shared_ptr<AttentionBackend> backend_;
  std::map<uint64_t, Running> running_;
  std::vector<MicroBatch> mbs_;
  step_t step_ = 0;
  bool in_step_ = false;
  StepDone out_;
  std::vector<RequestFailure> admission_failures_;  // reported with the next committed step
};

}  // namespace janus::actors
