// The AttentionShard driven by its messages alone: the test is its Frontend (the step
// clock) and its whole MoE side, which it plays with CpuForward (gate, experts) on the
// activations the shard sends. The tokens must be the reference engine's, exactly.
#include <doctest/doctest.h>

#include <map>

#include "actor_fixture.h"
#include "actors/attention_shard.h"
#include "runtime/model/reference_engine.h"

using namespace janus;
using namespace janus::actors;
using namespace janus::test;
using namespace std::chrono_literals;

namespace {

struct ShardRig {
  ActorWorld w;
  caf::scoped_actor self{*w.sys};
  CpuForward ref{w.ctx->model};
  caf::actor shard;
  caf::actor scheduler;  // the test, unless a case needs a scheduler it can kill

  explicit ShardRig(int micro_batches = 1, bool separate_scheduler = false) {
    w.ctx->spec.attention.micro_batches = micro_batches;
    auto backend = make_attention_backend(w.ctx->model, Device{}, backend_options(w.ctx->spec, w.config()), false);
    REQUIRE(backend.ok());
    shard = w.spawn<AttentionShard>(w.ctx, 0, std::shared_ptr<AttentionBackend>(std::move(*backend)));
    scheduler = separate_scheduler ? w.spawn_fn(acknowledging_member) : caf::actor_cast<caf::actor>(self);
    install(self, shard, membership(1));
  }

  Membership membership(uint32_t epoch) {
    Membership m;
    m.epoch = epoch;
    m.frontend = caf::actor_cast<caf::actor>(self);
    m.shards = {shard};
    m.routers = {caf::actor_cast<caf::actor>(self)};  // EGate: one router
    m.scheduler = scheduler;
    return m;
  }

  /// The MoE side's answer for a shard's rows: the reference MoE output as one partial.
  MoeResult moe_answer(const ShardActivations& a) {
    MoeResult r;
    r.key = a.key;
    r.shard = a.shard;
    if (a.h.rows > 0) {
      const std::vector<double> acc = reference_moe(ref, a.key.layer, a.h);
      Tensor t = Tensor::host(DType::kF64, a.h.rows, a.h.cols);
      std::copy(acc.begin(), acc.end(), t.as<double>());
      r.partials.push_back(t);
    }
    return r;
  }

  /// Plays the MoE side until the shard reports the step: `answer` says what each
  /// layer batch gets back (the reference by default).
  StepDone finish_step(const std::function<MoeResult(const ShardActivations&)>& answer = {}) {
    for (;;) {
      bool done = false;
      StepDone out;
      self->receive([&](ShardActivations& a) { self->send(shard, answer ? answer(a) : moe_answer(a)); },
                    [&](StepDone& d) {
                      out = std::move(d);
                      done = true;
                    },
                    caf::after(10s) >> [] { FAIL("the step did not end"); });
      if (done) return out;
    }
  }
};

GenerateRequest request(std::vector<int32_t> prompt, int max_new_tokens, bool logits = false) {
  GenerateRequest r;
  r.prompt = std::move(prompt);
  r.max_new_tokens = max_new_tokens;
  r.want_prompt_logits = logits;
  return r;
}

}  // namespace

TEST_CASE("a shard's tokens are the reference engine's, for requests that join while others decode, with one or two micro-batches") {
  for (int m : {1, 2}) {
    CAPTURE(m);
    ShardRig rig(m);
    const std::vector<GenerateRequest> reqs = {request({1, 5, 9, 2, 44, 17}, 6, true), request({7, 3}, 4), request({100, 2, 3}, 5)};
    auto want = ReferenceEngine(rig.w.ctx->model).generate(reqs);
    REQUIRE(want.ok());
    // Request i joins at step join[i]; it is then in every step until it finishes.
    const std::vector<step_t> join = {1, 1, 3};
    std::map<uint64_t, std::vector<int32_t>> got;
    std::map<uint64_t, std::string> reason;
    std::vector<float> logits;
    for (step_t step = 1; reason.size() < reqs.size(); ++step) {
      REQUIRE(step < 20);
      StepBegin sb{step, 1, {}};
      for (size_t i = 0; i < reqs.size(); ++i)
        if (join[i] == step) sb.admitted.push_back({i + 1, reqs[i], {}});
      rig.self->send(rig.shard, std::move(sb));
      StepDone d = rig.finish_step();
      CHECK(d.step == step);
      CHECK(d.epoch == 1);
      CHECK(d.shard == 0);
      CHECK(d.failures.empty());
      for (TokenOut& t : d.tokens) {
        CHECK(t.micro_batch < m);
        got[t.id].push_back(t.token);
        if (t.finished) reason[t.id] = t.finish_reason;
        if (!t.prompt_logits.empty()) logits = t.prompt_logits;
      }
    }
    for (size_t i = 0; i < reqs.size(); ++i) {
      CAPTURE(i);
      CHECK(got[i + 1] == (*want)[i].tokens);
      CHECK(reason[i + 1] == "length");
    }
    CHECK(logits == (*want)[0].last_logits);
    // Every finished request gave its cache back.
    rig.self->send(rig.shard, StepBegin{20, 1, {}});
    const StepDone idle = rig.finish_step();
    CHECK(idle.tokens.empty());
    CHECK(idle.free_blocks == rig.w.ctx->spec.attention.kv_blocks);
    CHECK(idle.free_seqs == rig.w.ctx->spec.attention.max_batch);
  }
}

TEST_CASE("a shard fails a request with the MoE side's Status, refuses one its cache cannot hold, and drops what is not for it") {
  ShardRig rig;
  const int kv_blocks = rig.w.ctx->spec.attention.kv_blocks;
  const GenerateRequest ok = request({1, 2, 3}, 3), doomed = request({4, 5}, 3), huge = request({6}, 400);
  rig.self->send(rig.shard, StepBegin{1, 0, {{1, ok, {}}}});  // another epoch: dropped
  rig.self->send(rig.shard, StepBegin{1, 1, {{2, doomed, {}}, {3, huge, {}}}});
  const StepDone d = rig.finish_step([&](const ShardActivations& a) {
    MoeResult r = rig.moe_answer(a);
    r.partials.clear();
    r.error = Status(ErrorCode::kResourceExhausted, "expert-1: out of device memory");
    return r;
  });
  CHECK(d.tokens.empty());
  REQUIRE(d.failures.size() == 2);
  std::map<uint64_t, Status> failed;
  for (const RequestFailure& f : d.failures) failed[f.id] = f.error;
  CHECK(failed[2].code() == ErrorCode::kResourceExhausted);
  CHECK(failed[2].message() == "request failed: expert-1: out of device memory");
  CHECK(failed[3].code() == ErrorCode::kResourceExhausted);
  CHECK(failed[3].message().find("request 3 could not be admitted on attention-0: KV cache: 401 positions exceed") == 0);
  CHECK(d.free_blocks == kv_blocks);  // nothing held for either

  // A result for a layer batch nobody waits for, or of another epoch, changes nothing.
  rig.self->send(rig.shard, MoeResult{{1, 0, 0, 1}, {}, Status::Ok(), 0});
  rig.self->send(rig.shard, MoeResult{{1, 0, 0, 0}, {}, Status::Ok(), 0});
  rig.self->send(rig.shard, StepBegin{2, 1, {{4, ok, {}}}});
  std::vector<int32_t> tokens;
  for (step_t step = 3; tokens.size() < 3; ++step) {
    for (const TokenOut& t : rig.finish_step().tokens) tokens.push_back(t.token);
    if (tokens.size() < 3) rig.self->send(rig.shard, StepBegin{step, 1, {}});
  }
  auto want = ReferenceEngine(rig.w.ctx->model).generate({ok});
  REQUIRE(want.ok());
  CHECK(tokens == (*want)[0].tokens);
  CHECK(stats_of(rig.self, rig.shard).dropped == 3);
}

TEST_CASE("a membership change mid-step aborts the step; re-run under the new epoch it gives the same tokens") {
  ShardRig rig;
  const GenerateRequest r = request({9, 8, 7, 6}, 4);
  auto want = ReferenceEngine(rig.w.ctx->model).generate({r});
  REQUIRE(want.ok());
  rig.self->send(rig.shard, StepBegin{1, 1, {{1, r, {}}}});
  const ShardActivations first = receive_one<ShardActivations>(rig.self, "the first layer batch");
  install(rig.self, rig.shard, rig.membership(2));
  rig.self->send(rig.shard, rig.moe_answer(first));  // epoch 1's answer comes too late: dropped
  CHECK(nothing_arrives(rig.self));                   // and the aborted step reports nothing

  std::vector<int32_t> tokens;
  for (step_t step = 2; tokens.size() < 4; ++step) {
    REQUIRE(step < 10);
    rig.self->send(rig.shard, StepBegin{step, 2, {}});
    const StepDone d = rig.finish_step();
    CHECK(d.epoch == 2);
    for (const TokenOut& t : d.tokens) tokens.push_back(t.token);
  }
  CHECK(tokens == (*want)[0].tokens);
}

TEST_CASE("when the MoE side dies mid-step, the shard fails the step's requests as unavailable instead of waiting") {
  ShardRig rig(1, /*separate_scheduler=*/true);
  rig.self->send(rig.shard, StepBegin{1, 1, {{5, request({3, 1, 4}, 8), {}}}});
  (void)receive_one<ShardActivations>(rig.self, "the first layer batch");
  caf::anon_send_exit(rig.scheduler, caf::exit_reason::kill);
  const StepDone d = receive_one<StepDone>(rig.self, "StepDone after the MoE side died");
  CHECK(d.tokens.empty());
  REQUIRE(d.failures.size() == 1);
  CHECK(d.failures[0].id == 5);
  CHECK(d.failures[0].error.code() == ErrorCode::kUnavailable);
  CHECK(d.failures[0].error.message().find("request failed: the MoE side died") == 0);
}
