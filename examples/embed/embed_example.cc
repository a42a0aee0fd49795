// Embedding Janus: build a disaggregated deployment in code, stream tokens from several
// requests, compare with the single-process reference engine, read metrics, shut down.
//
//   build/examples/janus_embed_example [config.lua]
#include <cstdio>
#include <mutex>

#include "actors/deployment.h"
#include "runtime/model/reference_engine.h"

int main(int argc, char** argv) {
  janus::Result<std::unique_ptr<janus::Deployment>> deployment = [&]() -> janus::Result<std::unique_ptr<janus::Deployment>> {
    if (argc > 1) return janus::Deployment::from_config(argv[1]);
    janus::GraphSpec spec;  // the tiny model: 2 shards, 3 expert instances with spare slots
    spec.source = "embed_example";
    spec.model.preset = "tiny-qwen3-moe";
    spec.attention.shards = 2;
    spec.experts.instances = 3;
    spec.experts.slots = 12;
    spec.scheduler.policy = "aebs";
    return janus::Deployment::create(spec);
  }();
  if (!deployment.ok()) {
    std::fprintf(stderr, "%s\n", deployment.status().to_string().c_str());
    return 1;
  }
  janus::Deployment& d = **deployment;

  std::mutex print_mu;
  std::vector<janus::GenerateRequest> requests;
  std::vector<janus::RequestHandle> handles;
  for (int i = 0; i < 3; ++i) {
    janus::GenerateRequest r;
    r.prompt = {static_cast<int32_t>(10 + i), 20, 30};
    r.max_new_tokens = 8;
    r.stop_at_eos = false;
    requests.push_back(r);
    handles.push_back(d.submit(r, [&print_mu, i](int32_t token) {
      std::lock_guard<std::mutex> lk(print_mu);
      std::printf("request %d streamed token %d\n", i, token);
    }));
  }
  janus::ReferenceEngine reference(std::shared_ptr<const janus::Model>(&d.model(), [](const janus::Model*) {}));
  auto expected = reference.generate(requests);
  int mismatches = 0;
  for (size_t i = 0; i < handles.size(); ++i) {
    janus::Result<janus::GenerateResult> r = handles[i].result.get();
    if (!r.ok()) {
      std::fprintf(stderr, "request %zu failed: %s\n", i, r.status().to_string().c_str());
      return 1;
    }
    const bool same = expected.ok() && (*expected)[i].tokens == r->tokens;
    mismatches += same ? 0 : 1;
    std::printf("request %zu done: %zu tokens (%s the reference engine)\n", i, r->tokens.size(), same ? "same as" : "DIFFERENT FROM");
  }
  janus::MetricsSnapshot m = d.metrics();
  std::printf("%lld tokens, %.1f tokens/s, TPOT p50 %.3f ms, a_max layer 0 mean %.2f\n", static_cast<long long>(m.tokens),
              m.tokens_per_s, m.tpot_s.p50 * 1e3, m.amax.empty() ? 0.0 : m.amax[0].mean);
  d.shutdown();
  return mismatches == 0 ? 0 : 1;
}
