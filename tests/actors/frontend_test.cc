// The Frontend driven by its messages alone: the test is its Scaler, and its shards are
// scripted actors whose every token is a known function of the request and its position,
// so what each caller must get is known without the Frontend: the script's tokens, each
// once and in order, across steps, pauses and a shard that leaves.
#include <doctest/doctest.h>

#include <future>
#include <map>
#include <mutex>

#include "actor_fixture.h"
#include "actors/frontend.h"
#include "actors/protocol/scaling.h"

using namespace janus;
using namespace janus::actors;
using namespace janus::test;
using namespace std::chrono_literals;

namespace {

/// The token a scripted shard makes for request `id` as its n-th.
int32_t scripted_token(uint64_t id, int n) { return static_cast<int32_t>((id * 31 + static_cast<uint64_t>(n) * 7) % 256); }

std::vector<int32_t> script(uint64_t id, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(scripted_token(id, i));
  return out;
}

struct ScriptedShardState {
  struct Running {
    int generated = 0, max_new_tokens = 0;
    bool breaks = false;
  };
  std::map<uint64_t, Running> running;
};

/// A shard that makes the script's tokens, and fails a request whose prompt starts with 2.
caf::behavior scripted_shard(caf::stateful_actor<ScriptedShardState>* self, int32_t index) {
  return {
      [](const Membership&) {},
      [=](StepBegin& sb) {
        auto& running = self->state.running;
        for (const AdmittedRequest& a : sb.admitted)
          running[a.id] = {static_cast<int>(a.resume_tokens.size()), a.request.max_new_tokens, a.request.prompt.front() == 2};
        StepDone d;
        d.step = sb.step;
        d.epoch = sb.epoch;
        d.shard = index;
        for (auto it = running.begin(); it != running.end();) {
          ScriptedShardState::Running& r = it->second;
          if (r.breaks) {
            d.failures.push_back({it->first, internal_error("the shard broke")});
            it = running.erase(it);
            continue;
          }
          TokenOut t;
          t.id = it->first;
          t.token = scripted_token(it->first, r.generated++);
          t.finished = r.generated >= r.max_new_tokens;
          if (t.finished) t.finish_reason = "length";
          d.tokens.push_back(t);
          it = t.finished ? running.erase(it) : std::next(it);
        }
        self->send(caf::actor_cast<caf::actor>(self->current_sender()), std::move(d));
      },
  };
}

/// What one caller sees: tokens as they stream, then the result.
struct Caller {
  std::mutex mu;
  std::vector<int32_t> streamed;
  std::promise<Result<GenerateResult>> done;
  std::future<Result<GenerateResult>> result = done.get_future();

  std::shared_ptr<RequestSink> sink() {
    auto s = std::make_shared<RequestSink>();
    s->on_token = [this](const TokenEvent& e) {
      std::lock_guard<std::mutex> lk(mu);
      streamed.push_back(e.token);
    };
    s->on_done = [this](Result<GenerateResult> r) { done.set_value(std::move(r)); };
    return s;
  }
  Result<GenerateResult> get() {
    REQUIRE(result.wait_for(5s) == std::future_status::ready);
    return result.get();
  }
  size_t tokens() {
    std::lock_guard<std::mutex> lk(mu);
    return streamed.size();
  }
};

struct FrontendRig {
  ActorWorld w;
  caf::scoped_actor self{*w.sys};
  caf::actor frontend, scheduler;
  std::vector<caf::actor> shards;
  std::map<uint64_t, std::unique_ptr<Caller>> callers;

  explicit FrontendRig(int kv_blocks = 64) {
    w.ctx->spec.attention.kv_blocks = kv_blocks;
    frontend = w.spawn<Frontend>(w.ctx);
    scheduler = w.spawn_fn(acknowledging_member);
    for (int32_t i = 0; i < 2; ++i) shards.push_back(w.spawn_fn(scripted_shard, i));
    reconfigure(shards, {});
  }

  /// As the Scaler: hand the Frontend the next membership and wait until it is in place.
  void reconfigure(std::vector<caf::actor> members, std::vector<caf::actor> retire) {
    Membership next;
    next.epoch = ++epoch;
    next.frontend = frontend;
    next.shards = std::move(members);
    next.scheduler = scheduler;
    self->send(frontend, Reconfigure{next, false, std::move(retire), "test", now_seconds()});
    const Reconfigured r = receive_one<Reconfigured>(self, "Reconfigured");
    CHECK(r.epoch == epoch);
  }

  Caller& submit(uint64_t id, std::vector<int32_t> prompt, int max_new_tokens) {
    auto& c = callers[id] = std::make_unique<Caller>();
    GenerateRequest g;
    g.prompt = std::move(prompt);
    g.max_new_tokens = max_new_tokens;
    self->send(frontend, SubmitRequest{id, g, c->sink()});
    return *c;
  }

  StepState clock(StepControl::Op op, int steps = 0) {
    StepState s;
    self->request(frontend, 5s, StepControl{op, steps}).receive([&](StepState& x) { s = x; }, [](caf::error&) { FAIL("no clock"); });
    return s;
  }

  RequestInfo info(uint64_t id) {
    std::vector<RequestInfo> v;
    self->request(frontend, 5s, RequestsQuery{id}).receive([&](std::vector<RequestInfo>& x) { v = std::move(x); }, [](caf::error&) {});
    REQUIRE(v.size() == 1);
    return v[0];
  }

  FrontendStats stats() {
    FrontendStats s;
    self->request(frontend, 5s, FrontendStats{}).receive([&](FrontendStats& x) { s = std::move(x); }, [](caf::error&) { FAIL("no stats"); });
    return s;
  }

  uint32_t epoch = 0;
};

/// Waits until the caller has seen `n` tokens.
void wait_tokens(Caller& c, size_t n) {
  for (int i = 0; i < 500 && c.tokens() < n; ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(c.tokens() >= n);
}

}  // namespace

TEST_CASE("the frontend admits to the shard with the most free blocks and streams each caller its shard's tokens, once and in order") {
  FrontendRig rig;
  rig.clock(StepControl::Op::kPause);
  // 23 positions = 2 blocks, then 1 block each: shard 0 (tie, lower index), then shard 1
  // (64 free against 62), then shard 1 again (63 against 62).
  Caller& a = rig.submit(1, {4, 5, 6}, 20);
  Caller& b = rig.submit(2, {7}, 5);
  Caller& c = rig.submit(3, {8, 9}, 3);
  CHECK(nothing_arrives(rig.self));
  CHECK(a.tokens() == 0);
  const StepState resumed = rig.clock(StepControl::Op::kResume);
  CHECK(resumed.step == 0);
  for (auto [caller, id, n] : std::vector<std::tuple<Caller*, uint64_t, int>>{{&a, 1, 20}, {&b, 2, 5}, {&c, 3, 3}}) {
    const uint64_t request = id;  // a copy: clang 14 cannot capture a structured binding
    CAPTURE(request);
    auto r = caller->get();
    REQUIRE(r.ok());
    CHECK(r->tokens == script(id, n));
    CHECK(caller->streamed == script(id, n));
    CHECK(r->finish_reason == "length");
  }
  CHECK(rig.info(1).shard == 0);
  CHECK(rig.info(2).shard == 1);
  CHECK(rig.info(3).shard == 1);
  CHECK(rig.info(1).state == "finished");
  CHECK(rig.info(3).history.size() == 3);
  const FrontendStats s = rig.stats();
  CHECK(s.completed == 3);
  CHECK(s.failed == 0);
  CHECK(s.tokens == 28);
  CHECK(s.requested_tokens == 28);
}

TEST_CASE("the frontend's clock: paused no step starts, step(n) runs exactly n, resume runs the rest") {
  FrontendRig rig;
  CHECK(rig.clock(StepControl::Op::kPause).paused);
  Caller& a = rig.submit(1, {3, 3}, 6);
  std::this_thread::sleep_for(100ms);
  CHECK(a.tokens() == 0);
  const StepState s = rig.clock(StepControl::Op::kStep, 2);
  CHECK(s.paused);
  CHECK(s.budget == 2);
  wait_tokens(a, 2);
  std::this_thread::sleep_for(100ms);
  CHECK(a.tokens() == 2);
  const StepState after = rig.clock(StepControl::Op::kState);
  CHECK(after.step == 2);
  CHECK(after.budget == 0);
  CHECK_FALSE(after.in_step);
  rig.clock(StepControl::Op::kResume);
  auto r = a.get();
  REQUIRE(r.ok());
  CHECK(r->tokens == script(1, 6));
}

TEST_CASE("requests that fail say why with their Status code: refused at once, failed by a shard, or by an unrecoverable deployment") {
  FrontendRig rig(/*kv_blocks=*/4);
  auto bad_token = rig.submit(1, {9999}, 4).get();
  CHECK(bad_token.status().code() == ErrorCode::kInvalidArgument);
  auto too_long = rig.submit(2, {1, 2, 3}, 300).get();
  CHECK(too_long.status().code() == ErrorCode::kInvalidArgument);
  CHECK(too_long.status().message().find("exceeds the shards' max_seq_len (256)") != std::string::npos);
  auto too_big = rig.submit(3, {1, 2, 3}, 100).get();  // 103 positions: 7 blocks of a cache of 4
  CHECK(too_big.status().code() == ErrorCode::kResourceExhausted);
  CHECK(too_big.status().message().find("needs 7 KV blocks, more than a shard's whole cache (4)") != std::string::npos);

  auto broken = rig.submit(4, {2, 7}, 4).get();  // the scripted shard breaks on it
  CHECK(broken.status().code() == ErrorCode::kUnavailable);
  CHECK(broken.status().message() == "the shard broke");

  rig.clock(StepControl::Op::kPause);
  Caller& waiting = rig.submit(5, {5}, 4);
  rig.self->send(rig.frontend, Unrecoverable{unavailable("expert-1 died (recovery is off)")});
  auto lost = waiting.get();
  CHECK(lost.status().code() == ErrorCode::kUnavailable);
  CHECK(lost.status().message() == "request failed: expert-1 died (recovery is off)");
  auto late = rig.submit(6, {5}, 4).get();
  CHECK(late.status().code() == ErrorCode::kUnavailable);
  CHECK(late.status().message().find("the deployment cannot serve: expert-1 died") != std::string::npos);
  const FrontendStats s = rig.stats();
  CHECK(s.failed == 6);
  CHECK(s.completed == 0);
}

TEST_CASE("a shard that leaves hands its requests to the others, which resume them: every caller still gets the script, once") {
  FrontendRig rig;
  rig.clock(StepControl::Op::kPause);
  Caller& a = rig.submit(1, {1, 1}, 8);
  Caller& b = rig.submit(2, {3, 1}, 8);
  rig.clock(StepControl::Op::kStep, 3);
  wait_tokens(a, 3);
  wait_tokens(b, 3);
  CHECK(rig.info(1).shard == 0);
  CHECK(rig.info(2).shard == 1);
  // Shard 0 leaves at the step boundary; request 1 resumes on shard 1 from its 3 tokens.
  rig.reconfigure({rig.shards[1]}, {rig.shards[0]});
  rig.clock(StepControl::Op::kResume);
  for (auto [caller, id] : std::vector<std::pair<Caller*, uint64_t>>{{&a, 1}, {&b, 2}}) {
    const uint64_t request = id;  // a copy: clang 14 cannot capture a structured binding
    CAPTURE(request);
    auto r = caller->get();
    REQUIRE(r.ok());
    CHECK(r->tokens == script(id, 8));
    CHECK(caller->streamed == script(id, 8));
  }
  const RequestInfo moved = rig.info(1);
  CHECK(moved.shard == 0);  // shard 1 is the first (only) shard of epoch 2
  REQUIRE(moved.history.size() == 8);
  CHECK(moved.history[2].shard == 0);  // the last step on the shard that left...
  CHECK(moved.history[3].shard == 1);  // ...and the first on the one that took it
  rig.self->send(rig.frontend, ShutdownRequest{"request failed: the deployment shut down"});
  auto after = rig.submit(3, {4}, 2).get();
  CHECK(after.status().code() == ErrorCode::kUnavailable);
  CHECK(after.status().message().find("shutting down") != std::string::npos);
}

TEST_CASE("the frontend's retained state stays bounded over many requests, and its counts and timings stay right") {
  // A server runs for days: the timings behind TTFT/TPOT are a window of the most recent
  // requests, a request's step places the most recent steps, finished requests the last
  // 256; the counters are exact whatever the window.
  FrontendRig rig(1 << 16);
  const size_t n = Frontend::kTimingWindow + 500;
  int64_t expected_tokens = 0;
  for (size_t batch = 0; batch < n; batch += 250) {
    std::vector<Caller*> wave;
    for (size_t i = batch; i < std::min(n, batch + 250); ++i) {
      const int len = 1 + static_cast<int>(i % 3);
      expected_tokens += len;
      wave.push_back(&rig.submit(i + 1, {3, 4}, len));
    }
    for (Caller* c : wave) REQUIRE(c->get().ok());
  }
  const FrontendStats s = rig.stats();
  CHECK(s.completed == n);
  CHECK(s.failed == 0);
  CHECK(s.tokens == expected_tokens);
  CHECK(s.requested_tokens == expected_tokens);
  CHECK(s.queued == 0);
  CHECK(s.running == 0);
  REQUIRE(s.finished.size() == Frontend::kTimingWindow);  // the window, not every request
  for (const RequestTiming& t : s.finished) {
    CHECK(t.tokens >= 1);
    CHECK(t.tokens <= 3);
    CHECK(t.first_token_s >= t.submit_s);
    CHECK(t.last_token_s >= t.first_token_s);
  }
  // The window holds the most recent requests: the newest ones' timings are in it.
  const double newest_submit = std::max_element(s.finished.begin(), s.finished.end(), [](const RequestTiming& a, const RequestTiming& b) {
                                 return a.submit_s < b.submit_s;
                               })->submit_s;
  CHECK(newest_submit >= s.first_submit_s);
  // A long request keeps only its most recent step places.
  Caller& longer = rig.submit(n + 1, {5}, static_cast<int>(Frontend::kHistorySteps) + 40);
  REQUIRE(longer.get().ok());
  CHECK(longer.streamed == script(n + 1, static_cast<int>(Frontend::kHistorySteps) + 40));
  const RequestInfo info = rig.info(n + 1);
  CHECK(info.history.size() == Frontend::kHistorySteps);
  CHECK(info.generated == static_cast<int32_t>(Frontend::kHistorySteps) + 40);
}
