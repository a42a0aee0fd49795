#include "runtime/serving/simulator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>

#include "runtime/scheduling/activation_stats.h"
#include "runtime/scheduling/aebs_synthetic.h"
#include "runtime/scheduling/expert_placement.h"
#include "runtime/scheduling/kv_admission.h"
#include "runtime/base/progress.h"
#include "runtime/config/scaling_decision.h"
#include "runtime/scheduling/scheduling_policy.h"

namespace janus {
namespace {

double wall_now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

int ceil_div(int a, int b) { return (a + b - 1) / b; }

}  // namespace

// -- shapes --------------------------------------------------------------------------------

SimShape SimShape::deepseek_v2() {
  SimShape s;
  s.name = "deepseek-v2";
  s.layers = 60;
  s.sparse_layers = 59;  // first_k_dense_replace = 1
  s.experts = 160;
  s.top_k = 6;
  s.hidden = 5120;
  const double H = 5120, wb = 2;
  s.expert_bytes = 3 * H * 1536 * wb;
  // MLA: q_a (H x 1536), q_b (1536 x 128 heads x 192), kv_a (H x (512 + 64)),
  // kv_b (512 x 128 x (128 + 128)), o (128 x 128 x H), and its norms.
  const double mla = H * 1536 + 1536.0 * 128 * 192 + H * 576 + 512.0 * 128 * 256 + 128.0 * 128 * H + 1536 + 512 + 2 * H;
  const double shared = 2 * 3 * H * 1536;  // 2 shared experts run beside the routed ones
  s.attention_layer_bytes = (mla + shared) * wb;
  s.shared_layer_bytes = shared * wb;
  const double vocab_bytes = 102400 * H * wb;
  const double dense_mlp = 3 * H * 12288 * wb;
  s.step_bytes = vocab_bytes + dense_mlp + mla * wb;  // LM head, and layer 0 (dense)
  s.attention_bytes = 60 * mla * wb + 59 * shared * wb + dense_mlp + 2 * vocab_bytes;
  s.kv_bytes_per_token_layer = 576 * wb;  // the compressed latent and the rope key
  return s;
}

SimShape SimShape::from_config(const ModelConfig& c, double wb) {
  SimShape s;
  s.name = family_name(c.family);
  s.layers = c.num_layers;
  for (int l = 0; l < c.num_layers; ++l) s.sparse_layers += c.is_sparse(l) ? 1 : 0;
  s.experts = c.num_experts;
  s.top_k = c.top_k;
  s.hidden = c.hidden_size;
  const double H = c.hidden_size;
  s.expert_bytes = 3 * H * c.moe_intermediate_size * wb;
  const double attn = (H * c.q_dim() * 2 + H * c.kv_dim() * 2 + 2 * H + (c.qk_norm ? 2 * c.head_dim : 0)) * wb;
  s.attention_layer_bytes = attn;
  const double vocab_bytes = static_cast<double>(c.vocab_size) * H * wb;
  const double dense_mlp = 3 * H * c.intermediate_size * wb;
  const int dense_layers = c.num_layers - s.sparse_layers;
  s.step_bytes = vocab_bytes + dense_layers * (attn + dense_mlp);
  s.attention_bytes = c.num_layers * attn + dense_layers * dense_mlp + 2 * vocab_bytes;
  s.kv_bytes_per_token_layer = 2.0 * c.kv_dim() * wb;
  return s;
}

Result<SimShape> SimShape::builtin(const std::string& name) {
  if (name == "deepseek-v2") return deepseek_v2();
  return not_found("no simulated model shape named '" + name + "' (known: deepseek-v2)");
}

const char* sim_system_name(SimSystem s) {
  switch (s) {
    case SimSystem::kJanus: return "janus";
    case SimSystem::kMegaScale: return "megascale";
    case SimSystem::kMonolithic: return "monolithic";
    case SimSystem::kMonolithicDp: return "monolithic-dp";
  }
  return "?";
}

Result<SimSystem> parse_sim_system(const std::string& n) {
  if (n == "janus") return SimSystem::kJanus;
  if (n == "megascale") return SimSystem::kMegaScale;
  if (n == "monolithic") return SimSystem::kMonolithic;
  if (n == "monolithic-dp") return SimSystem::kMonolithicDp;
  return invalid_argument("unknown system '" + n + "' (janus, megascale, monolithic, monolithic-dp)");
}

int SimConfig::attention_tp(int gpus_per_node) const {
  return system == SimSystem::kMonolithic ? std::max(1, std::min(attention, gpus_per_node)) : 1;
}

std::string SimConfig::name() const {
  if (monolithic()) return std::to_string(attention) + " GPUs";
  return std::to_string(attention) + "A" + std::to_string(moe) + "E";
}

// -- costs ---------------------------------------------------------------------------------

Result<SimCosts> SimCosts::from_profile(const PerfModel& p, const SimShape& shape) {
  if (p.attention_layer_bytes <= 0 || p.expert_bytes <= 0 || p.kv_bytes_per_token <= 0 || p.layers.empty())
    return invalid_argument("the profile lacks attention_layer_bytes, expert_bytes or kv_bytes_per_token (made by an older janus "
                            "profile? run it again)");
  const LayerCoefficients* moe = nullptr;
  for (const LayerCoefficients& l : p.layers)
    if (l.beta > 0 || l.c_e > 0) {
      moe = &l;
      break;
    }
  if (moe == nullptr) return invalid_argument("the profile has no MoE layer coefficients");
  if (shape.sparse_layers <= 0 || shape.experts <= 0 || shape.top_k <= 0 || shape.top_k > shape.experts)
    return invalid_argument("simulated shape '" + shape.name + "' has no MoE layers or a bad top-k");
  SimCosts c;
  c.shape = shape;
  const double ra = shape.attention_layer_bytes / p.attention_layer_bytes;
  const double kv_layer = p.kv_bytes_per_token / static_cast<double>(p.layers.size());
  c.c_a = moe->c_a * ra;
  c.alpha = moe->alpha * ra;
  c.c_kv = moe->c_kv * shape.kv_bytes_per_token_layer / kv_layer;
  c.step_fixed_s = shape.step_bytes * moe->c_a / p.attention_layer_bytes;
  c.expert_model = p;
  c.expert_model.layers = {*moe};
  c.expert_scale = shape.expert_bytes / p.expert_bytes;
  c.messaging_s = moe->c_comm;
  c.messaging_per_member_s = moe->comm_per_member;
  return c;
}

int SimCosts::expert_slots() const {
  const double per_expert = shape.sparse_layers * shape.expert_bytes;
  return static_cast<int>(std::min<double>(shape.experts, std::floor(usable_bytes() / per_expert)));
}

double SimCosts::expert_time(double a) const { return a <= 0 ? 0.0 : expert_model.moe_time(0, a) * expert_scale; }

double SimCosts::attention_time(double rows, double context) const {
  if (rows <= 0) return 0.0;
  return std::max(c_a, alpha * rows + c_kv * context);
}

double SimCosts::shared_time(double rows) const {
  if (rows <= 0 || shape.shared_layer_bytes <= 0) return 0.0;
  const double f = shape.shared_layer_bytes / shape.attention_layer_bytes;
  return std::max(c_a * f, alpha * f * rows);
}

std::string sim_memory_check(const SimCosts& c, const SimConfig& k) {
  const double usable = c.usable_bytes();
  const SimShape& s = c.shape;
  if (k.monolithic()) {
    if (k.attention < 1) return "needs at least one GPU";
    const int tp = k.attention_tp(c.link.gpus_per_node);
    if (k.attention % tp != 0) return "monolithic deployments grow in whole nodes of " + std::to_string(tp) + " GPUs";
    const double per_gpu = s.attention_bytes / tp + ceil_div(s.experts, k.attention) * s.sparse_layers * s.expert_bytes;
    if (per_gpu > usable)
      return human_bytes(per_gpu) + " of weights per GPU, more than the " + human_bytes(usable) + " usable";
    return "";
  }
  if (k.attention < 1 || k.moe < 1) return "needs at least one attention shard and one expert instance";
  if (s.attention_bytes >= usable)
    return "an attention shard's " + human_bytes(s.attention_bytes) + " of weights exceed the " + human_bytes(usable) + " usable";
  const int C = c.expert_slots();
  if (C < 1) return "one expert of every layer does not fit a device";
  if (static_cast<int64_t>(C) * k.moe < s.experts)
    return std::to_string(k.moe) + " instances of " + std::to_string(C) + " expert slots cannot hold " +
           std::to_string(s.experts) + " experts";
  return "";
}

// -- the step model ------------------------------------------------------------------------

struct StepModel::Impl {
  SimCosts costs;
  ExpertLayout layout;
  std::unique_ptr<SchedulingPolicy> policy;
  std::vector<uint64_t> layer_seed;
  // Routing and its assignment depend only on (tokens, step): cached, so that every
  // attention count of one expert side reuses them.
  struct Sample {
    std::vector<double> amax;          // per sampled layer
    std::vector<double> copies;        // per sampled layer: sum over tokens of instances (megascale) touched
    std::vector<double> max_in;        // per sampled layer: the most tokens one instance receives
    std::vector<std::vector<double>> rank_intra, rank_inter;  // monolithic: per layer, per GPU: bytes out
    std::vector<std::vector<int32_t>> routing;
  };
  std::map<std::pair<int64_t, uint64_t>, Sample> cache;

  Result<const Sample*> sample(SimSystem system, int64_t tokens, uint64_t step) {
    auto key = std::make_pair(tokens, step);
    if (auto it = cache.find(key); it != cache.end()) return &it->second;
    if (cache.size() > 4096) cache.clear();
    const SimShape& s = costs.shape;
    const int k = s.top_k, n = layout.num_instances();
    Sample out;
    std::vector<int32_t> rep(static_cast<size_t>(tokens) * k);
    for (size_t li = 0; li < layer_seed.size(); ++li) {
      JANUS_ASSIGN_OR_RETURN(std::vector<int32_t> ids, synthetic_routing(s.experts, k, tokens, costs.zipf, layer_seed[li], step));
      JANUS_TRY(policy->assign(layout, ids.data(), tokens, k, step * 131 + li, rep.data()));
      out.amax.push_back(max_activated_experts(layout, rep.data(), static_cast<int64_t>(rep.size())));
      std::vector<double> in(static_cast<size_t>(n), 0.0);
      double copies = 0;
      std::vector<double> intra(static_cast<size_t>(n), 0.0), inter(static_cast<size_t>(n), 0.0);
      const int g = costs.link.gpus_per_node;
      std::vector<int32_t> seen;
      for (int64_t t = 0; t < tokens; ++t) {
        seen.clear();
        for (int j = 0; j < k; ++j) {
          const int32_t inst = layout.instance_of(rep[static_cast<size_t>(t * k + j)]);
          if (std::find(seen.begin(), seen.end(), inst) == seen.end()) seen.push_back(inst);
        }
        copies += static_cast<double>(seen.size());
        for (int32_t i : seen) in[static_cast<size_t>(i)] += 1;
        if (system == SimSystem::kMonolithic || system == SimSystem::kMonolithicDp) {
          // Token t is dispatched by GPU t mod d (a TP group splits its rows over its GPUs).
          const int src = static_cast<int>(t % n);
          for (int32_t i : seen) {
            if (i == src) continue;
            (i / g == src / g ? intra : inter)[static_cast<size_t>(src)] += 1;
          }
        }
      }
      out.copies.push_back(copies);
      out.max_in.push_back(*std::max_element(in.begin(), in.end()));
      out.rank_intra.push_back(std::move(intra));
      out.rank_inter.push_back(std::move(inter));
      out.routing.push_back(std::move(ids));
    }
    return &cache.emplace(key, std::move(out)).first->second;
  }
};

StepModel::StepModel() : impl_(std::make_unique<Impl>()) {}
StepModel::StepModel(StepModel&&) noexcept = default;
StepModel& StepModel::operator=(StepModel&&) noexcept = default;
StepModel::~StepModel() = default;

Result<StepModel> StepModel::create(const SimCosts& costs, const SimConfig& config, const std::vector<double>& load,
                                    const std::vector<double>& coactivation) {
  if (std::string why = sim_memory_check(costs, config); !why.empty()) return resource_exhausted(config.name() + ": " + why);
  const SimShape& s = costs.shape;
  StepModel m;
  m.config_ = config;
  Impl& im = *m.impl_;
  im.costs = costs;
  const int sampled = std::max(1, std::min(costs.sampled_layers, s.sparse_layers));
  for (int i = 0; i < sampled; ++i) {
    m.layers_.push_back(i * s.sparse_layers / sampled);
    im.layer_seed.push_back(costs.seed * 1000003ull + static_cast<uint64_t>(m.layers_.back()));
  }
  if (config.monolithic()) {
    // Expert parallelism without replicas: E/d contiguous experts per GPU.
    const int d = config.attention, per = ceil_div(s.experts, d);
    std::vector<std::vector<int32_t>> place(static_cast<size_t>(d));
    for (int e = 0; e < s.experts; ++e) place[static_cast<size_t>(e / per)].push_back(e);
    JANUS_ASSIGN_OR_RETURN(im.layout, ExpertLayout::create(s.experts, per, place));
    JANUS_ASSIGN_OR_RETURN(im.policy, make_scheduling_policy("primary"));
    return m;
  }
  PlacementInput in;
  in.num_experts = s.experts;
  in.num_instances = config.moe;
  in.slots = costs.expert_slots();
  in.coactivation = coactivation;
  if (load.size() == static_cast<size_t>(s.experts)) {
    in.load = load;
  } else {
    // No statistics yet: the expected popularity of the sampled layers.
    in.load.assign(static_cast<size_t>(s.experts), 0.0);
    for (uint64_t seed : im.layer_seed) {
      const std::vector<double> p = synthetic_popularity(s.experts, costs.zipf, seed);
      for (int e = 0; e < s.experts; ++e) in.load[static_cast<size_t>(e)] += p[static_cast<size_t>(e)];
    }
  }
  JANUS_ASSIGN_OR_RETURN(im.layout, place_experts(in));
  JANUS_ASSIGN_OR_RETURN(im.policy,
                         make_scheduling_policy(config.system == SimSystem::kJanus ? costs.janus_policy : "random_replica", costs.seed));
  return m;
}

int StepModel::kv_blocks(int block_size) const {
  const SimCosts& c = impl_->costs;
  const SimShape& s = c.shape;
  double free_bytes = c.usable_bytes() - s.attention_bytes;
  if (config_.monolithic()) {
    // Per attention replica: MLA's latent KV is replicated on every GPU of a TP group.
    const int tp = config_.attention_tp(c.link.gpus_per_node);
    free_bytes = c.usable_bytes() - s.attention_bytes / tp - ceil_div(s.experts, config_.attention) * s.sparse_layers * s.expert_bytes;
  }
  const double per_block = s.kv_bytes_per_token_layer * s.layers * block_size;
  return static_cast<int>(std::max(0.0, std::floor(free_bytes / per_block)));
}

Result<SimStepTime> StepModel::step(const std::vector<double>& rows, const std::vector<double>& context, uint64_t step) {
  Impl& im = *impl_;
  const SimCosts& c = im.costs;
  const SimShape& s = c.shape;
  const LinkModel& L = c.link;
  if (rows.size() != context.size() || rows.empty()) return invalid_argument("simulate: one rows and one context entry per shard");
  const double B = std::accumulate(rows.begin(), rows.end(), 0.0);
  const int64_t tokens = static_cast<int64_t>(std::llround(B));
  const double row_bytes = s.hidden * s.act_bytes;
  const int n_a = static_cast<int>(rows.size());
  SimStepTime t;
  const double layers = s.sparse_layers;
  auto per_layer_moe = [&](const std::vector<double>& amax) {
    double sum = 0;
    for (double a : amax) sum += c.expert_time(a);
    return sum / static_cast<double>(amax.size());
  };
  auto mean = [](const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size()); };

  if (config_.system == SimSystem::kJanus) {
    double attn = 0, shared = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      const double sh = c.shared_time(rows[i]);
      attn = std::max(attn, std::max(0.0, c.attention_time(rows[i], context[i]) - sh));
      shared = std::max(shared, sh);
    }
    JANUS_ASSIGN_OR_RETURN(const Impl::Sample* smp, im.sample(config_.system, tokens, step));
    last_routing_ = smp->routing;
    const int n_e = config_.moe;
    const int nodes = ceil_div(n_e, L.gpus_per_node);
    const int smallest_node = n_e - (nodes - 1) * L.gpus_per_node;
    const double max_rows = *std::max_element(rows.begin(), rows.end());
    // Two-phase: every MoE node gets every token once across nodes, then NVLink inside.
    const double nic = std::max(max_rows * row_bytes * nodes, B * row_bytes / smallest_node) / L.nic_bytes_per_s;
    const double fan = n_e > 1 ? B * row_bytes / L.nvlink_bytes_per_s + L.nvlink_latency_s : 0.0;
    const double one_way = L.nic_latency_s + nic + fan;
    const double exchange = 2 * one_way + c.messaging_s + c.messaging_per_member_s * (n_a + n_e);
    // The shared experts run on the attention side while it waits for the MoE side.
    const double moe = per_layer_moe(smp->amax);
    t.attention = layers * (attn + std::max(0.0, shared - exchange - moe));
    t.exchange = layers * exchange;
    t.experts = layers * moe;
    t.amax = mean(smp->amax);
    t.fixed = c.step_fixed_s;
  } else if (config_.system == SimSystem::kMegaScale) {
    const int m = std::max(1, c.micro_batches);
    double attn = 0;
    for (size_t i = 0; i < rows.size(); ++i) attn = std::max(attn, c.attention_time(rows[i] / m, context[i] / m));
    JANUS_ASSIGN_OR_RETURN(const Impl::Sample* smp, im.sample(config_.system, std::max<int64_t>(1, tokens / m), step));
    last_routing_ = smp->routing;
    const int n_e = config_.moe;
    const double max_share = *std::max_element(rows.begin(), rows.end()) / std::max(1.0, B);
    double moe_side = 0, exch = 0;
    for (size_t li = 0; li < smp->amax.size(); ++li) {
      // Attention-side gate: each token to every instance holding one of its replicas.
      const double out = max_share * smp->copies[li] * row_bytes, in = smp->max_in[li] * row_bytes;
      const double one_way = L.nic_latency_s + n_e * L.per_message_s + std::max(out, in) / L.nic_bytes_per_s;
      exch += 2 * one_way;
      moe_side += 2 * one_way + c.expert_time(smp->amax[li]);
    }
    moe_side /= static_cast<double>(smp->amax.size());
    exch /= static_cast<double>(smp->amax.size());
    const double messaging = c.messaging_s + c.messaging_per_member_s * (n_a + n_e);
    // Ping-pong: the two sides overlap across micro-batches; the slower one sets the pace.
    t.attention = layers * m * attn;
    t.exchange = layers * m * exch;
    t.experts = layers * m * (moe_side - exch);
    t.amax = mean(smp->amax);
    t.fixed = c.step_fixed_s;
    t.total = layers * (m * std::max(attn, moe_side) + messaging) + t.fixed;
    return t;
  } else {
    const int d = config_.attention, tp = config_.attention_tp(L.gpus_per_node);
    double attn = 0, allreduce = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      attn = std::max(attn, std::max(c.c_a / tp, c.alpha * rows[i] / tp + c.c_kv * context[i]));
      if (tp > 1)
        allreduce = std::max(allreduce, L.nvlink_latency_s + 2.0 * (tp - 1) / tp * rows[i] * row_bytes / L.nvlink_bytes_per_s);
    }
    JANUS_ASSIGN_OR_RETURN(const Impl::Sample* smp, im.sample(config_.system, tokens, step));
    last_routing_ = smp->routing;
    double a2a = 0;
    for (size_t li = 0; li < smp->amax.size(); ++li) {
      double worst = 0;
      for (int r = 0; r < d; ++r)
        worst = std::max(worst, std::max(smp->rank_intra[li][static_cast<size_t>(r)] * row_bytes / L.nvlink_bytes_per_s,
                                         smp->rank_inter[li][static_cast<size_t>(r)] * row_bytes / L.nic_bytes_per_s));
      a2a += 2 * ((d > L.gpus_per_node ? L.nic_latency_s : L.nvlink_latency_s) + d * L.per_message_s + worst);
    }
    a2a /= static_cast<double>(smp->amax.size());
    t.attention = layers * attn;
    t.exchange = layers * (allreduce + a2a + c.messaging_s);
    t.experts = layers * per_layer_moe(smp->amax);
    t.amax = mean(smp->amax);
    t.fixed = c.step_fixed_s / tp;
  }
  t.total = t.attention + t.exchange + t.experts + t.fixed;
  return t;
}

// -- Algorithm 2's view --------------------------------------------------------------------

PerfModel scaling_model(const SimCosts& c) {
  // One entry per sampled layer, each standing for sparse/sampled layers (the Scheduler's
  // window, and so the a_max bound, covers the sampled layers), plus the per-step work.
  const SimShape& s = c.shape;
  const int sampled = std::max(1, std::min(c.sampled_layers, s.sparse_layers));
  const double f = static_cast<double>(s.sparse_layers) / sampled;
  const double row_bytes = s.hidden * s.act_bytes;
  PerfModel m;
  m.source = "simulated " + s.name;
  m.num_experts = s.experts;
  m.top_k = s.top_k;
  m.slots = c.expert_slots();
  m.attention_weight_bytes = s.attention_bytes;
  m.kv_bytes_per_token = s.kv_bytes_per_token_layer * s.layers;
  m.device_bytes = c.usable_bytes();
  m.max_batch_per_shard = 1 << 20;
  for (auto [a, sec] : c.expert_model.moe_curve) m.moe_curve.emplace_back(a, sec * c.expert_scale * f);
  for (int i = 0; i < sampled; ++i) {
    LayerCoefficients l;
    l.c_a = c.c_a * f;
    l.alpha = c.alpha * f;
    l.c_kv = c.c_kv * f;
    l.beta = c.expert_model.layers[0].beta * c.expert_scale * f;
    l.c_e = c.expert_model.layers[0].c_e * c.expert_scale * f;
    // The two-phase exchange, both ways: each shard's rows over its own NIC, the whole
    // batch into a full MoE node's NICs and across its NVLink.
    l.c_comm = f * (c.messaging_s + 2 * (c.link.nic_latency_s + c.link.nvlink_latency_s));
    l.comm_per_member = f * c.messaging_per_member_s;
    l.comm_per_shard_row = f * 2 * row_bytes / c.link.nic_bytes_per_s;
    l.comm_per_row = f * 2 * row_bytes * (1 / (c.link.gpus_per_node * c.link.nic_bytes_per_s) + 1 / c.link.nvlink_bytes_per_s);
    m.layers.push_back(l);
  }
  LayerCoefficients fixed;
  fixed.c_a = c.step_fixed_s;
  m.layers.push_back(fixed);
  return m;
}

// -- serving in virtual time -----------------------------------------------------------------

Result<SimServingReport> simulate_serving(const SimCosts& costs, const SimServingOptions& o) {
  const SimShape& s = costs.shape;
  const double wall0 = wall_now();
  if (o.scaler.policy == "slo" && o.initial.system != SimSystem::kJanus)
    return invalid_argument("simulate: scaler{policy=\"slo\"} runs Janus's Algorithm 2; the " +
                            std::string(sim_system_name(o.initial.system)) + " system has a fixed size here");
  struct Req {
    double at = 0, first = -1, last = 0;
    int prompt = 0, out = 0, generated = 0, shard = -1, blocks = 0;
    bool prefill = true;  // the next step processes its whole context (first step, or resumed)
  };
  std::vector<Req> reqs;
  for (const PlannedRequest& p : o.requests) {
    Req r;
    r.at = p.at_s;
    r.prompt = std::max<int>(1, static_cast<int>(p.prompt.size()));
    r.out = std::max(1, p.max_new_tokens);
    r.blocks = kv_blocks_needed(r.prompt, r.out, o.block_size);
    reqs.push_back(r);
  }
  std::stable_sort(reqs.begin(), reqs.end(), [](const Req& a, const Req& b) { return a.at < b.at; });

  SimServingReport rep;
  rep.submitted = static_cast<int>(reqs.size());
  SimConfig cfg = o.initial;
  const int stat_layers = std::max(1, std::min(costs.sampled_layers, s.sparse_layers));
  JANUS_ASSIGN_OR_RETURN(ActivationStats stats, ActivationStats::create(stat_layers, s.experts, std::max(1, o.stats_window)));
  JANUS_ASSIGN_OR_RETURN(StepModel model, StepModel::create(costs, cfg, {}));
  auto shards_of = [&](const SimConfig& k) {
    return k.attention_groups(costs.link.gpus_per_node);
  };
  std::vector<ShardOccupancy> occ(static_cast<size_t>(shards_of(cfg)));
  int kv_blocks = model.kv_blocks(o.block_size);
  for (const Req& r : reqs)
    if (r.blocks > kv_blocks)
      return resource_exhausted("simulate: a request of " + std::to_string(r.prompt + r.out) + " tokens needs " +
                                std::to_string(r.blocks) + " KV blocks, more than a shard's " + std::to_string(kv_blocks));
  std::deque<int> queue;
  std::vector<int> running;
  size_t next = 0;
  double t = 0;
  uint64_t step = 0;
  int devices = cfg.devices();
  rep.devices_over_time.emplace_back(0.0, devices);
  struct Pending {
    double ready_s;
    SimConfig config;
    int devices_held;
  };
  std::optional<Pending> pending;
  double next_tick = o.scaler.interval_s;
  int64_t requested = 0, requested_at_tick = 0;
  std::unique_ptr<ProgressBar> bar;
  if (o.progress) bar = std::make_unique<ProgressBar>("simulate", rep.submitted, "requests");
  auto advance = [&](double to) {  // devices are paid for while held, busy or not
    rep.device_seconds += (pending ? pending->devices_held : devices) * (to - t);
    t = to;
  };
  auto window = [&] {
    ActivationWindow w;
    for (int64_t v : stats.total_counts()) w.load.push_back(static_cast<double>(v));
    for (int l = 0; l < stats.num_layers(); ++l) w.probability.push_back(stats.activation_probability(l));
    return w;
  };
  const PerfModel& sm = o.scaling_model;
  ShrinkHold shrink_hold(o.scaler.shrink_after);
  while (true) {
    const bool open = o.duration_s <= 0 || t <= o.duration_s;
    while (open && next < reqs.size() && reqs[next].at <= t) {
      requested += reqs[next].out;
      queue.push_back(static_cast<int>(next++));
    }
    // The Scaler: Algorithm 2 each interval on the demand it saw.
    while (o.scaler.policy == "slo" && t >= next_tick) {
      const double lambda = static_cast<double>(requested - requested_at_tick) / o.scaler.interval_s;
      requested_at_tick = requested;
      const ScalingDecision d = decide_scaling(sm, o.scaler, sm.slots, lambda, window());
      SimDecision rec;
      rec.t_s = next_tick;
      rec.lambda = lambda;
      rec.feasible = d.feasible;
      rec.attention = d.feasible ? d.attention : o.scaler.max_attention;
      rec.moe = d.feasible ? d.moe : o.scaler.max_moe;
      rec.predicted_tpot = d.tpot;
      const SimConfig& target = pending ? pending->config : cfg;
      const ShrinkHold::Target to = shrink_hold.next(target.attention, target.moe, rec.attention, rec.moe);
      rec.attention = to.attention;
      rec.moe = to.moe;
      rec.changed = rec.attention != target.attention || rec.moe != target.moe;
      if (rec.changed) {
        SimConfig nc = cfg;
        nc.attention = rec.attention;
        nc.moe = rec.moe;
        // New members load their weights (in parallel) before the switch; serving goes on.
        const double load_s = std::max(nc.moe > cfg.moe ? costs.expert_slots() * s.sparse_layers * s.expert_bytes : 0.0,
                                       nc.attention > cfg.attention ? s.attention_bytes : 0.0) /
                              o.weight_load_bytes_per_s;
        pending = Pending{t + load_s, nc, std::max(devices, nc.devices())};
        rep.devices_over_time.emplace_back(t, pending->devices_held);
      }
      rep.decisions.push_back(rec);
      next_tick += o.scaler.interval_s;
    }
    // A step boundary: install a ready membership (placement from the activation window).
    if (pending && t >= pending->ready_s) {
      const ActivationWindow w = window();
      std::vector<double> coact;
      for (int64_t v : stats.total_coactivation()) coact.push_back(static_cast<double>(v));
      JANUS_ASSIGN_OR_RETURN(StepModel nm, StepModel::create(costs, pending->config, w.load, coact));
      const int n_old = shards_of(cfg), n_new = shards_of(pending->config);
      cfg = pending->config;
      model = std::move(nm);
      kv_blocks = model.kv_blocks(o.block_size);
      occ.resize(static_cast<size_t>(n_new));
      if (n_new < n_old) {
        // Retiring shards' requests resume elsewhere by recomputation, ahead of the queue.
        std::vector<int> moved;
        for (int id : running)
          if (reqs[static_cast<size_t>(id)].shard >= n_new) moved.push_back(id);
        for (auto it = moved.rbegin(); it != moved.rend(); ++it) {
          Req& r = reqs[static_cast<size_t>(*it)];
          r.shard = -1;
          r.prefill = true;
          queue.push_front(*it);
          ++rep.moved_requests;
        }
        running.erase(std::remove_if(running.begin(), running.end(), [&](int id) { return reqs[static_cast<size_t>(id)].shard < 0; }),
                      running.end());
      }
      devices = cfg.devices();
      pending.reset();
      rep.devices_over_time.emplace_back(t, devices);
    }
    // The Frontend's admission.
    while (!queue.empty()) {
      Req& r = reqs[static_cast<size_t>(queue.front())];
      const int i = pick_shard(occ, r.blocks, kv_blocks, o.max_batch_per_shard);
      if (i < 0) break;
      occ[static_cast<size_t>(i)].blocks += r.blocks;
      occ[static_cast<size_t>(i)].seqs += 1;
      r.shard = i;
      running.push_back(queue.front());
      queue.pop_front();
    }
    if (running.empty()) {
      if (!queue.empty()) return internal_error("simulate: a queued request fits no idle shard");
      const double wake = std::min(open && next < reqs.size() ? reqs[next].at : INFINITY,
                                   o.scaler.policy == "slo" && (next < reqs.size() || pending) ? next_tick : INFINITY);
      const double wake2 = pending ? std::min(wake, pending->ready_s) : wake;
      if (!std::isfinite(wake2)) break;
      advance(std::max(t, wake2));
      continue;
    }
    std::vector<double> rows(occ.size(), 0.0), ctx(occ.size(), 0.0);
    for (int id : running) {
      const Req& r = reqs[static_cast<size_t>(id)];
      const double context = r.prompt + r.generated;
      rows[static_cast<size_t>(r.shard)] += r.prefill ? context : 1;
      ctx[static_cast<size_t>(r.shard)] += context;
    }
    JANUS_ASSIGN_OR_RETURN(SimStepTime st, model.step(rows, ctx, step++));
    const auto& routing = model.last_routing();
    for (size_t l = 0; l < routing.size(); ++l)
      JANUS_TRY(stats.record(static_cast<int>(l), routing[l].data(), static_cast<int64_t>(routing[l].size()) / s.top_k, s.top_k));
    advance(t + st.total);
    ++rep.steps;
    std::vector<int> still;
    for (int id : running) {
      Req& r = reqs[static_cast<size_t>(id)];
      r.prefill = false;
      ++r.generated;
      ++rep.tokens;
      if (r.first < 0) r.first = t;
      r.last = t;
      if (r.generated < r.out) {
        still.push_back(id);
        continue;
      }
      occ[static_cast<size_t>(r.shard)].blocks -= r.blocks;
      occ[static_cast<size_t>(r.shard)].seqs -= 1;
      ++rep.completed;
      const double ttft = r.first - r.at, tpot = r.out > 1 ? (r.last - r.first) / (r.out - 1) : 0.0;
      rep.ttft.push_back(ttft);
      rep.tpot.push_back(tpot);
      if (ttft <= o.slo_ttft_s && tpot <= o.slo_tpot_s) rep.goodput_requests += 1;
      if (bar) bar->update(rep.completed);
    }
    running = std::move(still);
  }
  if (bar) bar->finish();
  rep.virtual_s = t;
  rep.wall_s = wall_now() - wall0;
  return rep;
}

// -- the study -------------------------------------------------------------------------------

Result<StudyResult> run_study(const SimCosts& costs, const StudyOptions& o) {
  const double wall0 = wall_now();
  const SimShape& s = costs.shape;
  StudyResult res;
  const int C = costs.expert_slots();
  const int min_moe = C > 0 ? ceil_div(s.experts, C) : o.max_devices + 1;
  // Every (system, expert side) once: its placement and routing samples serve every
  // attention count.
  struct Side {
    SimConfig config;
    std::vector<int> attention_counts;
  };
  std::vector<Side> sides;
  for (SimSystem sys : o.systems) {
    if (sys == SimSystem::kMonolithic || sys == SimSystem::kMonolithicDp) {
      for (int d = costs.link.gpus_per_node; d <= o.max_devices; d += costs.link.gpus_per_node)
        sides.push_back({SimConfig{sys, d, 0}, {d}});
    } else {
      for (int n_e = min_moe; n_e < o.max_devices; ++n_e) {
        Side side{SimConfig{sys, 1, n_e}, {}};
        for (int n_a = 1; n_a + n_e <= o.max_devices; ++n_a) side.attention_counts.push_back(n_a);
        sides.push_back(side);
      }
    }
  }
  std::unique_ptr<ProgressBar> bar;
  if (o.progress) bar = std::make_unique<ProgressBar>("study", static_cast<int64_t>(sides.size() * o.batches.size()), "shapes");
  int done = 0;
  for (const Side& side : sides) {
    const std::string mem = sim_memory_check(costs, side.config);
    Result<StepModel> model = mem.empty() ? StepModel::create(costs, side.config) : Result<StepModel>(resource_exhausted(mem));
    for (int B : o.batches) {
      for (int n_a : side.attention_counts) {
        StudyCandidate cand;
        cand.config = side.config;
        if (!side.config.monolithic()) cand.config.attention = n_a;
        cand.batch = B;
        if (!model.ok()) {
          cand.infeasible = model.status().message();
          res.candidates.push_back(cand);
          continue;
        }
        // Steady closed loop: B requests at evenly spread progress; B/output of them
        // finish per step and their replacements prefill `prompt` tokens.
        const int groups = cand.config.attention_groups(costs.link.gpus_per_node);
        const double rows_total = B + static_cast<double>(B) / o.output * o.prompt;
        const double ctx_total = B * (o.prompt + o.output / 2.0);
        const int kv = model->kv_blocks(16);
        if (static_cast<double>(B) / groups * kv_blocks_needed(o.prompt, o.output, 16) > kv) {
          cand.infeasible = "the KV cache of " + std::to_string(B) + " requests does not fit";
          res.candidates.push_back(cand);
          continue;
        }
        std::vector<double> rows(static_cast<size_t>(groups), rows_total / groups), ctx(static_cast<size_t>(groups), ctx_total / groups);
        std::vector<double> times;
        for (int st = 0; st < o.steps; ++st) {
          JANUS_ASSIGN_OR_RETURN(SimStepTime t, model->step(rows, ctx, static_cast<uint64_t>(st)));
          times.push_back(t.total);
          cand.mean.total += t.total / o.steps;
          cand.mean.attention += t.attention / o.steps;
          cand.mean.exchange += t.exchange / o.steps;
          cand.mean.experts += t.experts / o.steps;
          cand.mean.fixed += t.fixed / o.steps;
          cand.mean.amax += t.amax / o.steps;
        }
        cand.tpot_s = cand.mean.total;
        cand.tpot_p99_s = percentile(times, 99);
        cand.tokens_per_s_per_device = B / cand.tpot_s / cand.config.devices();
        if (side.config.system == SimSystem::kMegaScale) {
          // Ping-pong needs the two sides balanced: MegaScale-Infer only considers those plans.
          const double a = cand.mean.attention, e = cand.mean.experts + cand.mean.exchange;
          if (std::max(a, e) > costs.balance * std::min(a, e))
            cand.infeasible = "attention and MoE times differ by more than " + std::to_string(costs.balance) + "x";
        }
        res.candidates.push_back(cand);
      }
      if (bar) bar->update(++done);
    }
  }
  if (bar) bar->finish();
  for (SimSystem sys : o.systems)
    for (int B : o.batches)
      for (double slo : o.slos_ms) {
        StudyRow row{sys, B, slo, false, {}};
        for (const StudyCandidate& c : res.candidates) {
          if (c.config.system != sys || c.batch != B || !c.infeasible.empty() || c.tpot_s * 1e3 > slo) continue;
          const bool better = !row.feasible || c.tokens_per_s_per_device > row.best.tokens_per_s_per_device + 1e-9 ||
                              (std::abs(c.tokens_per_s_per_device - row.best.tokens_per_s_per_device) <= 1e-9 &&
                               c.config.devices() < row.best.config.devices());
          if (better) {
            row.feasible = true;
            row.best = c;
          }
        }
        res.rows.push_back(row);
      }
  res.wall_s = wall_now() - wall0;
  return res;
}

std::string study_csv(const StudyResult& r) {
  std::ostringstream o;
  o << "system,batch,slo_ms,feasible,config,devices,tpot_ms,tpot_p99_ms,tokens_per_s_per_device,attention_ms,exchange_ms,"
       "experts_ms,fixed_ms,amax\n";
  for (const StudyRow& row : r.rows) {
    const StudyCandidate& c = row.best;
    o << sim_system_name(row.system) << ',' << row.batch << ',' << row.slo_ms << ',' << (row.feasible ? 1 : 0) << ',';
    if (row.feasible)
      o << c.config.name() << ',' << c.config.devices() << ',' << c.tpot_s * 1e3 << ',' << c.tpot_p99_s * 1e3 << ','
        << c.tokens_per_s_per_device << ',' << c.mean.attention * 1e3 << ',' << c.mean.exchange * 1e3 << ','
        << c.mean.experts * 1e3 << ',' << c.mean.fixed * 1e3 << ',' << c.mean.amax;
    else
      o << ",,,,,,,,,";
    o << '\n';
  }
  return o.str();
}

std::string candidates_csv(const StudyResult& r) {
  std::ostringstream o;
  o << "system,batch,config,attention,moe,devices,tpot_ms,tokens_per_s_per_device,infeasible\n";
  for (const StudyCandidate& c : r.candidates) {
    std::string why = c.infeasible;
    std::replace(why.begin(), why.end(), ',', ';');
    o << sim_system_name(c.config.system) << ',' << c.batch << ',' << c.config.name() << ',' << c.config.attention << ','
      << c.config.moe << ',' << c.config.devices() << ',' << c.tpot_s * 1e3 << ',' << c.tokens_per_s_per_device << ',' << why
      << '\n';
  }
  return o.str();
}

}  // namespace janus
