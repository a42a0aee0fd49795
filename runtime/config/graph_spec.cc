#include "runtime/config/graph_spec.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "runtime/base/progress.h"
#include "runtime/base/tensor.h"
#include "runtime/scheduling/expert_placement.h"
#include "runtime/scheduling/scheduling_policy.h"

namespace janus {

GraphSpec default_graph_spec() {
  GraphSpec g;
  g.source = "<default>";
  g.model.preset = "tiny-qwen3-moe";
  g.attention.shards = 2;
  g.attention.micro_batches = 2;
  g.experts.instances = 4;
  g.experts.slots = 10;  // 40 slots for 32 experts: 8 spare replicas
  g.router.side = "moe";
  g.scheduler.policy = "aebs";
  g.workload.prompts = {{5, 17, 99}, {42, 7, 300, 11, 256, 8}, {100}, {9, 8, 7, 6, 5, 4, 3, 2}};
  g.workload.max_new_tokens = 24;
  return g;
}

const std::string& shard_device(const GraphSpec& s, int i) {
  const auto& d = s.attention.devices;
  return d.size() == 1 ? d[0] : d[static_cast<size_t>(i)];
}

const std::string& instance_device(const GraphSpec& s, int i) {
  const auto& d = s.experts.devices;
  return d.size() == 1 ? d[0] : d[static_cast<size_t>(i)];
}

std::string shard_node(const GraphSpec& s, int i) {
  const auto& n = s.attention.nodes;
  if (n.empty()) return "";
  return n.size() == 1 ? n[0] : n[static_cast<size_t>(i)];
}

std::string instance_node(const GraphSpec& s, int i) {
  const auto& n = s.experts.nodes;
  if (n.empty()) return "";
  return n.size() == 1 ? n[0] : n[static_cast<size_t>(i)];
}

int node_index(const GraphSpec& s, const std::string& name) {
  for (size_t i = 0; i < s.nodes.size(); ++i)
    if (s.nodes[i].name == name) return static_cast<int>(i);
  return -1;
}

namespace {

// The placement of actors on nodes: every shard and instance on a declared node, a node
// on one side only (attention and experts are disaggregated: a node's bridge speaks for
// one side), every declared node used.
Status resolve_nodes(GraphSpec& s) {
  if (s.nodes.empty()) {
    if (!s.attention.nodes.empty())
      return invalid_argument(s.attention.where + ": attention{}: 'nodes' names nodes, but the config declares no nodes{}");
    if (!s.experts.nodes.empty())
      return invalid_argument(s.experts.where + ": experts{}: 'nodes' names nodes, but the config declares no nodes{}");
    return Status::Ok();
  }
  const std::string& nw = s.nodes.front().where;
  std::set<std::string> names;
  for (const NodeSpec& n : s.nodes) {
    if (n.name.empty()) return invalid_argument(n.where + ": nodes{}: a node needs a non-empty 'name'");
    if (n.host.empty()) return invalid_argument(n.where + ": nodes{}: node '" + n.name + "' needs a non-empty 'host'");
    if (!names.insert(n.name).second) return invalid_argument(n.where + ": nodes{}: node '" + n.name + "' is declared twice");
  }
  std::map<std::string, std::string> side;  // node -> "attention" / "experts"
  auto place = [&](std::vector<std::string>& list, int count, const char* section, const std::string& where) -> Status {
    auto err = [&](const std::string& m) { return invalid_argument(where + ": " + section + "{}: " + m); };
    if (list.empty()) return err("'nodes' is required when the config declares nodes{} (the node of each actor, or one for all)");
    if (list.size() != 1 && static_cast<int>(list.size()) != count)
      return err("'nodes' lists " + std::to_string(list.size()) + " nodes for " + std::to_string(count) +
                 " actors (give one per actor, or one for all)");
    for (const std::string& n : list) {
      if (!names.count(n)) {
        std::string all;
        for (const NodeSpec& x : s.nodes) all += (all.empty() ? "" : ", ") + x.name;
        return err("no node named '" + n + "' (nodes: " + all + ")");
      }
      auto [it, fresh] = side.emplace(n, section);
      if (!fresh && it->second != section)
        return err("node '" + n + "' hosts both attention shards and expert instances; a node serves one side");
    }
    return Status::Ok();
  };
  JANUS_TRY(place(s.attention.nodes, s.attention.shards, "attention", s.attention.where));
  JANUS_TRY(place(s.experts.nodes, s.experts.instances, "experts", s.experts.where));
  for (const NodeSpec& n : s.nodes)
    if (!side.count(n.name)) return invalid_argument(n.where + ": nodes{}: node '" + n.name + "' hosts no shard and no instance");
  const auto& modes = {"single", "case1", "case2", "auto"};
  if (std::find(modes.begin(), modes.end(), s.exchange.mode) == modes.end())
    return invalid_argument(s.exchange.where + ": exchange{}: 'mode' must be \"single\", \"case1\", \"case2\" or \"auto\", got \"" +
                            s.exchange.mode + "\"");
  const auto& transports = {"auto", "tcp", "shm", "verbs"};
  if (std::find(transports.begin(), transports.end(), s.exchange.transport) == transports.end())
    return invalid_argument(s.exchange.where + ": exchange{}: 'transport' must be \"auto\", \"tcp\", \"shm\" or \"verbs\", got \"" +
                            s.exchange.transport + "\"");
  if (s.scaler.policy == "slo")
    return invalid_argument(s.scaler.where + ": scaler{}: policy \"slo\" is not supported on a multi-node deployment yet (" + nw + ")");
  return Status::Ok();
}

Status check_devices(const std::vector<std::string>& devices, int count, const std::string& section, const std::string& where,
                     int cuda_devices) {
  auto err = [&](const std::string& m) { return invalid_argument(where + ": " + section + ": " + m); };
  if (devices.empty()) return err("'devices' is empty");
  if (devices.size() != 1 && static_cast<int>(devices.size()) != count)
    return err("'devices' lists " + std::to_string(devices.size()) + " devices for " + std::to_string(count) +
               " actors (give one per actor, or one for all)");
  for (const std::string& d : devices) {
    auto dev = Device::parse(d);
    if (!dev.ok()) return err(dev.status().message());
    if (!dev->is_cpu() && dev->ordinal >= cuda_devices)
      return err("device '" + d + "' does not exist (" + std::to_string(cuda_devices) + " CUDA device" +
                 (cuda_devices == 1 ? "" : "s") + " visible)");
  }
  return Status::Ok();
}

constexpr int kMaxMembers = 4096;      // shards or expert instances of one deployment
constexpr int kMaxBatch = 65536;       // rows per shard and step
constexpr int kMaxBlockSize = 65536;   // tokens per KV block
constexpr int kMaxKvBlocks = 1 << 24;  // KV blocks per shard
constexpr int kMaxSlots = 1 << 16;     // expert slots per instance

template <class Err>
Status at_most(const Err& err, const char* key, int64_t value, int64_t limit) {
  if (value <= limit) return Status::Ok();
  return err("'" + std::string(key) + "' " + std::to_string(value) + " is more than Janus supports (at most " + std::to_string(limit) +
             ")");
}

// Scenario events (at(t, ...)) are checked against the graph they will meet, in time
// order, so that a typo in an actor name or an impossible scale fails when the config
// loads rather than minutes into a bench-serve run.
Status check_scenario(const GraphSpec& s, int num_experts) {
  std::vector<const ScenarioEvent*> events;
  for (const ScenarioEvent& e : s.scenario) events.push_back(&e);
  std::stable_sort(events.begin(), events.end(), [](const ScenarioEvent* a, const ScenarioEvent* b) { return a->at_s < b->at_s; });
  int shards = s.attention.shards, instances = s.experts.instances;
  for (const ScenarioEvent* e : events) {
    auto err = [&](const std::string& m) { return invalid_argument(e->where + ": at(" + std::to_string(e->at_s) + "): " + m); };
    if (e->op == "scale") {
      if (e->attention < 1 || e->moe < 1) return err("scale{} needs attention and moe of at least 1");
      JANUS_TRY(at_most(err, "attention", e->attention, kMaxMembers));
      JANUS_TRY(at_most(err, "moe", e->moe, kMaxMembers));
      if (static_cast<int64_t>(e->moe) * s.experts.slots < num_experts)
        return err("scale{moe=" + std::to_string(e->moe) + "}: " + std::to_string(e->moe) + " instances x " +
                   std::to_string(s.experts.slots) + " slots cannot hold the model's " + std::to_string(num_experts) + " experts");
      shards = e->attention;
      instances = e->moe;
      continue;
    }
    if (e->op == "slow" && !(e->ms >= 0 && e->ms <= 600000)) return err("slow(): ms must be between 0 and 600000");
    // The actors the graph has at that time (the names `janus graph` prints).
    const std::string& a = e->actor;
    auto numbered = [&](const std::string& prefix, int count) {
      if (a.rfind(prefix, 0) != 0 || a.size() == prefix.size() || a.size() > prefix.size() + 5) return false;
      for (size_t i = prefix.size(); i < a.size(); ++i)
        if (a[i] < '0' || a[i] > '9') return false;
      return std::stoi(a.substr(prefix.size())) < count;
    };
    const bool known = a == "scheduler" || (s.egate() && a == "router") || numbered("attention-", shards) ||
                       numbered("expert-", instances) || (!s.egate() && numbered("router-", shards));
    if (!known)
      return err(e->op + " \"" + a + "\": no such actor at that time (" + std::to_string(shards) + " attention shards, " +
                 std::to_string(instances) + " expert instances; names as `janus graph` prints them)");
  }
  return Status::Ok();
}

}  // namespace

Status check_graph_devices(const GraphSpec& s, int cuda_devices) {
  JANUS_TRY(check_devices(s.attention.devices, s.attention.shards, "attention{}", s.attention.where, cuda_devices));
  return check_devices(s.experts.devices, s.experts.instances, "experts{}", s.experts.where, cuda_devices);
}

Status resolve_graph(GraphSpec& s, const ModelConfig& m, int cuda_devices) {
  const int E = m.num_experts;
  {
    auto err = [&](const std::string& msg) { return invalid_argument(s.attention.where + ": attention{}: " + msg); };
    if (s.attention.shards < 1) return err("'shards' must be at least 1");
    if (s.attention.micro_batches < 1) return err("'micro_batches' must be at least 1");
    if (s.attention.max_batch < 1) return err("'max_batch' must be at least 1");
    if (s.attention.block_size < 1) return err("'block_size' must be at least 1");
    // Sizes past these would first show up as allocations of many gigabytes (an uncaught
    // std::bad_alloc) or a graph of a million actors: refuse them here, naming the key.
    JANUS_TRY(at_most(err, "shards", s.attention.shards, kMaxMembers));
    JANUS_TRY(at_most(err, "max_batch", s.attention.max_batch, kMaxBatch));
    JANUS_TRY(at_most(err, "micro_batches", s.attention.micro_batches, s.attention.max_batch));
    JANUS_TRY(at_most(err, "block_size", s.attention.block_size, kMaxBlockSize));
    JANUS_TRY(at_most(err, "kv_blocks", s.attention.kv_blocks, kMaxKvBlocks));
    if (s.attention.max_seq_len == 0) s.attention.max_seq_len = std::min(m.max_position_embeddings, 4096);
    if (s.attention.max_seq_len > m.max_position_embeddings)
      return err("'max_seq_len' " + std::to_string(s.attention.max_seq_len) + " exceeds the model's max_position_embeddings (" +
                 std::to_string(m.max_position_embeddings) + ")");
    if (s.attention.kv_blocks == 0) s.attention.kv_blocks = 1024;
    JANUS_TRY(check_devices(s.attention.devices, s.attention.shards, "attention{}", s.attention.where, cuda_devices));
  }
  {
    auto err = [&](const std::string& msg) { return invalid_argument(s.experts.where + ": experts{}: " + msg); };
    const int n = s.experts.instances;
    if (n < 1) return err("'instances' must be at least 1");
    JANUS_TRY(at_most(err, "instances", n, kMaxMembers));
    JANUS_TRY(at_most(err, "slots", s.experts.slots, kMaxSlots));
    if (s.experts.slots == 0) s.experts.slots = (E + n - 1) / n;
    if (s.experts.slots < 1) return err("'slots' must be at least 1");
    if (static_cast<int64_t>(n) * s.experts.slots < E)
      return err(std::to_string(n) + " instances x " + std::to_string(s.experts.slots) + " slots = " +
                 std::to_string(n * s.experts.slots) + " slots, fewer than the model's " + std::to_string(E) + " experts");
    JANUS_TRY(check_devices(s.experts.devices, n, "experts{}", s.experts.where, cuda_devices));
    if (s.experts.auto_placement) {
      auto layout = auto_placement(E, n, s.experts.slots);
      if (!layout.ok()) return err(layout.status().message());
      s.resolved_placement = layout->placement();
    } else {
      if (static_cast<int>(s.experts.placement.size()) != n)
        return err("'placement' lists " + std::to_string(s.experts.placement.size()) + " instances, 'instances' is " +
                   std::to_string(n));
      auto layout = ExpertLayout::create(E, s.experts.slots, s.experts.placement);
      if (!layout.ok()) return err(layout.status().message());
      s.resolved_placement = s.experts.placement;
    }
  }
  if (s.router.side != "moe" && s.router.side != "attention")
    return invalid_argument(s.router.where + ": router{}: 'side' must be \"moe\" (EGate) or \"attention\" (AGate), got \"" +
                            s.router.side + "\"");
  {
    if (!is_scheduling_policy_name(s.scheduler.policy)) {
      const auto names = known_scheduling_policy_names();
      std::string all;
      for (const auto& n : names) all += (all.empty() ? "" : ", ") + n;
      return invalid_argument(s.scheduler.where + ": scheduler{}: unknown policy '" + s.scheduler.policy + "' (policies: " + all +
                              ")");
    }
  }
  {
    auto err = [&](const std::string& msg) { return invalid_argument(s.workload.where + ": workload{}: " + msg); };
    for (size_t i = 0; i < s.workload.prompts.size(); ++i) {
      if (s.workload.prompts[i].empty()) return err("prompt " + std::to_string(i + 1) + " is empty");
      for (int32_t t : s.workload.prompts[i])
        if (t < 0 || t >= m.vocab_size)
          return err("prompt " + std::to_string(i + 1) + " holds token id " + std::to_string(t) + ", outside the vocabulary [0, " +
                     std::to_string(m.vocab_size) + ")");
      if (static_cast<int>(s.workload.prompts[i].size()) + s.workload.max_new_tokens > s.attention.max_seq_len)
        return err("prompt " + std::to_string(i + 1) + " plus max_new_tokens exceeds max_seq_len (" +
                   std::to_string(s.attention.max_seq_len) + ")");
    }
    if (s.workload.max_new_tokens < 0) return err("'max_new_tokens' must not be negative");
  }
  JANUS_TRY(check_scenario(s, E));
  JANUS_TRY(resolve_nodes(s));
  return Status::Ok();
}

namespace {

std::string model_line(const GraphSpec& s, const ModelConfig& m) {
  std::ostringstream o;
  if (!s.model.preset.empty()) o << s.model.preset << " (preset, seed " << s.model.seed << ")";
  else o << s.model.path;
  o << ": " << family_name(m.family) << ", " << m.num_layers << " layers (" << m.num_sparse_layers() << " MoE), hidden "
    << m.hidden_size << ", " << m.num_experts << " experts top-" << m.top_k << ", heads " << m.num_heads << "/" << m.num_kv_heads;
  return o.str();
}

// What the paged cache keeps per token and layer, and what an MHA cache of the same heads
// would keep (transformers' cache of an MLA model: every head's full key and value), so
// that a researcher sees what MLA saves before choosing a KV budget.
struct KvFootprint {
  int64_t values = 0;      // cached values per token and layer
  int64_t mha_values = 0;  // the same heads as plain MHA (0 when the cache is MHA/GQA already)
};

KvFootprint kv_footprint(const ModelConfig& m) {
  KvFootprint f;
  f.values = int64_t{m.kv_cache_values() ? 2 : 1} * m.kv_cache_heads() * m.kv_cache_head_dim();
  if (m.mla()) f.mha_values = int64_t{m.num_heads} * (m.qk_head_dim() + m.v_head_dim);
  return f;
}

}  // namespace

std::string kv_cache_summary(const ModelConfig& m) {
  const KvFootprint f = kv_footprint(m);
  const double per_token = static_cast<double>(f.values) * m.num_layers;
  std::ostringstream o;
  o << f.values << " values per token per layer" << (m.mla() ? " (latent + RoPE key)" : "") << ", "
    << human_bytes(per_token * 4) << "/token in F32, " << human_bytes(per_token * 2) << " in BF16";
  if (f.mha_values > 0) {
    char r[32];
    std::snprintf(r, sizeof r, "%.1fx", static_cast<double>(f.mha_values) / static_cast<double>(f.values));
    o << "; as MHA (" << m.num_heads << " heads of K " << m.qk_head_dim() << " + V " << m.v_head_dim << ") "
      << f.mha_values << " values, " << r << " more";
  }
  return o.str();
}

std::string graph_to_text(const GraphSpec& s, const ModelConfig& m) {
  std::ostringstream o;
  o << "graph from " << s.source << "\n";
  o << "model      " << model_line(s, m) << "\n";
  if (!s.model_dir.empty()) o << "checkpoint " << s.model_dir << "\n";
  o << "kv cache   " << kv_cache_summary(m) << "\n";
  o << "router     " << (s.egate() ? "moe (EGate: complete activations go to the MoE side)"
                                   : "attention (AGate: each shard gates, only routed rows travel)")
    << "\n";
  o << "scheduler  " << s.scheduler.policy << "\n\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-14s %-8s %s\n", "actor", "device", "role");
  o << line;
  std::snprintf(line, sizeof line, "%-14s %-8s %s\n", "frontend", "cpu", "admits requests, streams tokens");
  o << line;
  for (int i = 0; i < s.attention.shards; ++i) {
    std::snprintf(line, sizeof line, "%-14s %-8s max_batch %d, %d micro-batch%s, KV %d blocks x %d tokens\n",
                  ("attention-" + std::to_string(i)).c_str(), shard_device(s, i).c_str(), s.attention.max_batch,
                  s.attention.micro_batches, s.attention.micro_batches == 1 ? "" : "es", s.attention.kv_blocks,
                  s.attention.block_size);
    o << line;
    if (!s.egate()) {
      std::snprintf(line, sizeof line, "%-14s %-8s gate of attention-%d\n", ("router-" + std::to_string(i)).c_str(),
                    shard_device(s, i).c_str(), i);
      o << line;
    }
  }
  if (s.egate()) {
    std::snprintf(line, sizeof line, "%-14s %-8s gate over each whole layer batch\n", "router", instance_device(s, 0).c_str());
    o << line;
  }
  std::snprintf(line, sizeof line, "%-14s %-8s policy %s\n", "scheduler", instance_device(s, 0).c_str(), s.scheduler.policy.c_str());
  o << line;
  for (int i = 0; i < s.experts.instances; ++i) {
    std::string experts;
    const auto& p = s.resolved_placement.empty() ? std::vector<int32_t>{} : s.resolved_placement[static_cast<size_t>(i)];
    for (int32_t e : p) experts += " " + std::to_string(e);
    std::snprintf(line, sizeof line, "%-14s %-8s %zu/%d slots:", ("expert-" + std::to_string(i)).c_str(),
                  instance_device(s, i).c_str(), p.size(), s.experts.slots);
    o << line << experts << "\n";
  }
  std::snprintf(line, sizeof line, "%-14s %-8s membership, epochs\n", "scaler", "cpu");
  o << line;
  if (s.multi_node()) {
    o << "\nnodes (frontend and scaler stay in the coordinator, listening on " << s.coordinator.listen << "; exchange "
      << s.exchange.mode << " over " << s.exchange.transport << ")\n";
    for (const NodeSpec& n : s.nodes) {
      std::string who;
      for (int i = 0; i < s.attention.shards; ++i)
        if (shard_node(s, i) == n.name) who += " attention-" + std::to_string(i) + (s.egate() ? "" : " router-" + std::to_string(i));
      bool moe = false;
      for (int i = 0; i < s.experts.instances; ++i)
        if (instance_node(s, i) == n.name) {
          who += " expert-" + std::to_string(i);
          moe = true;
        }
      if (moe) who += std::string(s.egate() ? " router" : "") + " scheduler (a mirror per MoE node)";
      std::snprintf(line, sizeof line, "  %-8s %-15s", n.name.c_str(), n.host.c_str());
      o << line << who << "\n";
    }
  }
  if (!s.workload.prompts.empty())
    o << "\nworkload   " << s.workload.prompts.size() << " prompts, max_new_tokens " << s.workload.max_new_tokens
      << (s.workload.temperature > 0 ? ", sampled" : ", greedy") << "\n";
  return o.str();
}

std::string graph_to_json(const GraphSpec& s, const ModelConfig& m) {
  using nlohmann::json;
  json j;
  j["source"] = s.source;
  j["model"] = {{"path", s.model.path},     {"preset", s.model.preset},       {"seed", s.model.seed},
                {"checkpoint", s.model_dir}, {"family", family_name(m.family)}, {"layers", m.num_layers},
                {"experts", m.num_experts}, {"top_k", m.top_k},               {"hidden", m.hidden_size}};
  const KvFootprint kv = kv_footprint(m);
  j["kv_cache"] = {{"values_per_token_layer", kv.values},
                   {"bytes_per_token_f32", kv.values * m.num_layers * 4},
                   {"mha_values_per_token_layer", kv.mha_values}};
  j["router"] = s.router.side;
  j["scheduler"] = {{"policy", s.scheduler.policy}, {"seed", s.scheduler.seed}};
  json actors = json::array();
  actors.push_back({{"name", "frontend"}, {"kind", "Frontend"}, {"device", "cpu"}});
  for (int i = 0; i < s.attention.shards; ++i) {
    actors.push_back({{"name", "attention-" + std::to_string(i)},
                      {"kind", "AttentionShard"},
                      {"device", shard_device(s, i)},
                      {"micro_batches", s.attention.micro_batches},
                      {"max_batch", s.attention.max_batch},
                      {"kv_blocks", s.attention.kv_blocks},
                      {"block_size", s.attention.block_size}});
    if (!s.egate())
      actors.push_back({{"name", "router-" + std::to_string(i)}, {"kind", "Router"}, {"device", shard_device(s, i)}});
  }
  if (s.egate()) actors.push_back({{"name", "router"}, {"kind", "Router"}, {"device", instance_device(s, 0)}});
  actors.push_back({{"name", "scheduler"}, {"kind", "Scheduler"}, {"device", instance_device(s, 0)}});
  for (int i = 0; i < s.experts.instances; ++i)
    actors.push_back({{"name", "expert-" + std::to_string(i)},
                      {"kind", "ExpertInstance"},
                      {"device", instance_device(s, i)},
                      {"slots", s.experts.slots},
                      {"experts", s.resolved_placement.empty() ? json::array() : json(s.resolved_placement[static_cast<size_t>(i)])}});
  actors.push_back({{"name", "scaler"}, {"kind", "Scaler"}, {"device", "cpu"}});
  j["actors"] = actors;
  j["workload"] = {{"prompts", s.workload.prompts}, {"max_new_tokens", s.workload.max_new_tokens}};
  return j.dump(2);
}

}  // namespace janus
