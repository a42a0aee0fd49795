#include "runtime/config/lua_config.h"
#include "runtime/config/lua_sandbox.h"

// The C++ build of Lua (liblua5.4-c++): included without extern "C", errors are exceptions.
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

namespace janus {
namespace {

struct LoadState {
  GraphSpec spec;
  std::map<std::string, std::string> declared;  // section -> where it was declared
};

LoadState* state_of(lua_State* L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "janus.config");
  auto* s = static_cast<LoadState*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  return s;
}

// "config.lua:12" for the Lua line that called the running C function.
std::string caller_where(lua_State* L) {
  luaL_where(L, 1);
  std::string w = lua_tostring(L, -1);
  lua_pop(L, 1);
  while (!w.empty() && (w.back() == ' ' || w.back() == ':')) w.pop_back();
  return w.empty() ? "?" : w;
}

const char* type_name(lua_State* L, int idx) { return luaL_typename(L, idx); }

// Reads the fields of the table argument of one section call, checking names and types.
class Section {
 public:
  Section(lua_State* L, const char* name, std::vector<std::string> keys) : L_(L), name_(name), keys_(std::move(keys)) {
    where_ = caller_where(L);
    if (lua_gettop(L) != 1 || !lua_istable(L, 1))
      fail(std::string("expects one table argument, as in ") + name_ + "{key=value, ...}");
    LoadState* st = state_of(L);
    auto [it, fresh] = st->declared.emplace(name_, where_);
    if (!fresh) fail("given twice (first at " + it->second + ")");
    // Unknown keys first, so that a typo is reported as such rather than as a default.
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
      lua_pop(L, 1);
      if (lua_type(L, -1) != LUA_TSTRING) fail("keys must be names, as in " + std::string(name_) + "{key=value}");
      const std::string k = lua_tostring(L, -1);
      if (std::find(keys_.begin(), keys_.end(), k) == keys_.end()) {
        std::string all;
        for (const auto& x : keys_) all += (all.empty() ? "" : ", ") + x;
        fail("unknown key '" + k + "' (keys: " + all + ")");
      }
    }
  }

  const std::string& where() const { return where_; }

  [[noreturn]] void fail(const std::string& msg) const {
    lua_pushstring(L_, (where_ + ": " + name_ + "{}: " + msg).c_str());
    lua_error(L_);
    throw;  // unreachable: lua_error does not return
  }

  // Pushes field k; returns false (and pushes nothing) when absent.
  bool get(const char* k) const {
    lua_getfield(L_, 1, k);
    if (lua_isnil(L_, -1)) {
      lua_pop(L_, 1);
      return false;
    }
    return true;
  }

  void integer(const char* k, int* out, int min_value = 1) const {
    if (!get(k)) return;
    int ok = 0;
    lua_Integer v = lua_tointegerx(L_, -1, &ok);
    if (!ok || lua_type(L_, -1) != LUA_TNUMBER || v < min_value || v > (1 << 30))
      fail("'" + std::string(k) + "' must be an integer >= " + std::to_string(min_value) + ", got " + describe(-1));
    *out = static_cast<int>(v);
    lua_pop(L_, 1);
  }

  void unsigned64(const char* k, uint64_t* out) const {
    if (!get(k)) return;
    int ok = 0;
    lua_Integer v = lua_tointegerx(L_, -1, &ok);
    if (!ok || lua_type(L_, -1) != LUA_TNUMBER || v < 0) fail("'" + std::string(k) + "' must be a non-negative integer, got " + describe(-1));
    *out = static_cast<uint64_t>(v);
    lua_pop(L_, 1);
  }

  void number(const char* k, float* out, double lo, double hi) const {
    if (!get(k)) return;
    if (lua_type(L_, -1) != LUA_TNUMBER) fail("'" + std::string(k) + "' must be a number, got " + describe(-1));
    double v = lua_tonumber(L_, -1);
    if (v < lo || v > hi)
      fail("'" + std::string(k) + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + describe(-1));
    *out = static_cast<float>(v);
    lua_pop(L_, 1);
  }

  void boolean(const char* k, bool* out) const {
    if (!get(k)) return;
    if (lua_type(L_, -1) != LUA_TBOOLEAN) fail("'" + std::string(k) + "' must be true or false, got " + describe(-1));
    *out = lua_toboolean(L_, -1) != 0;
    lua_pop(L_, 1);
  }

  void string(const char* k, std::string* out) const {
    if (!get(k)) return;
    if (lua_type(L_, -1) != LUA_TSTRING) fail("'" + std::string(k) + "' must be a string, got " + describe(-1));
    *out = lua_tostring(L_, -1);
    lua_pop(L_, 1);
  }

  // A string (one value for all) or a list of strings.
  void strings(const char* k, std::vector<std::string>* out) const {
    if (!get(k)) return;
    out->clear();
    if (lua_type(L_, -1) == LUA_TSTRING) {
      out->push_back(lua_tostring(L_, -1));
    } else if (lua_istable(L_, -1)) {
      const lua_Integer n = luaL_len(L_, -1);
      for (lua_Integer i = 1; i <= n; ++i) {
        lua_geti(L_, -1, i);
        if (lua_type(L_, -1) != LUA_TSTRING)
          fail("'" + std::string(k) + "'[" + std::to_string(i) + "] must be a string, got " + describe(-1));
        out->push_back(lua_tostring(L_, -1));
        lua_pop(L_, 1);
      }
    } else {
      fail("'" + std::string(k) + "' must be a string or a list of strings, got " + describe(-1));
    }
    lua_pop(L_, 1);
  }

  // A list of {number, number} pairs (a rate ramp).
  std::vector<std::pair<double, double>> number_pairs(const char* what) const {
    std::vector<std::pair<double, double>> out;
    const lua_Integer n = luaL_len(L_, -1);
    for (lua_Integer i = 1; i <= n; ++i) {
      lua_geti(L_, -1, i);
      lua_geti(L_, -1, 1);
      lua_geti(L_, -2, 2);
      if (lua_type(L_, -2) != LUA_TNUMBER || lua_type(L_, -1) != LUA_TNUMBER)
        fail("'" + std::string(what) + "'[" + std::to_string(i) + "] must be a pair {time_s, value}");
      out.emplace_back(lua_tonumber(L_, -2), lua_tonumber(L_, -1));
      lua_pop(L_, 3);
    }
    return out;
  }

  // A list of lists of non-negative integers (prompts, placements).
  std::vector<std::vector<int32_t>> int_lists(const char* what) const {
    std::vector<std::vector<int32_t>> out;
    if (!lua_istable(L_, -1)) fail("'" + std::string(what) + "' must be a list of lists of integers, got " + describe(-1));
    const lua_Integer n = luaL_len(L_, -1);
    for (lua_Integer i = 1; i <= n; ++i) {
      lua_geti(L_, -1, i);
      if (!lua_istable(L_, -1))
        fail("'" + std::string(what) + "'[" + std::to_string(i) + "] must be a list of integers, got " + describe(-1));
      std::vector<int32_t> row;
      const lua_Integer m = luaL_len(L_, -1);
      for (lua_Integer j = 1; j <= m; ++j) {
        lua_geti(L_, -1, j);
        int ok = 0;
        lua_Integer v = lua_tointegerx(L_, -1, &ok);
        if (!ok || lua_type(L_, -1) != LUA_TNUMBER || v < 0 || v > INT32_MAX)
          fail("'" + std::string(what) + "'[" + std::to_string(i) + "][" + std::to_string(j) +
               "] must be a non-negative integer, got " + describe(-1));
        row.push_back(static_cast<int32_t>(v));
        lua_pop(L_, 1);
      }
      out.push_back(std::move(row));
      lua_pop(L_, 1);
    }
    return out;
  }

 private:
  // The offending value as the user wrote it: "abc" (quoted), 2.5, true, or "a table".
  std::string describe(int idx) const {
    const int t = lua_type(L_, idx);
    if (t == LUA_TSTRING) return "\"" + std::string(lua_tostring(L_, idx)) + "\"";
    if (t == LUA_TNUMBER || t == LUA_TBOOLEAN) {
      std::string v = luaL_tolstring(L_, idx, nullptr);
      lua_pop(L_, 1);
      return v;
    }
    return std::string("a ") + type_name(L_, idx);
  }

  lua_State* L_;
  const char* name_;
  std::vector<std::string> keys_;
  std::string where_;
};

int l_model(lua_State* L) {
  Section s(L, "model", {"path", "preset", "seed", "dtype"});
  ModelSpec& m = state_of(L)->spec.model;
  m.where = s.where();
  s.string("path", &m.path);
  s.string("preset", &m.preset);
  s.unsigned64("seed", &m.seed);
  s.string("dtype", &m.dtype);
  if (m.path.empty() == m.preset.empty()) s.fail("give exactly one of 'path' and 'preset'");
  if (!m.dtype.empty() && m.dtype != "f32" && m.dtype != "bf16" && m.dtype != "f16")
    s.fail("'dtype' must be \"f32\", \"bf16\" or \"f16\", got \"" + m.dtype + "\"");
  return 0;
}

int l_attention(lua_State* L) {
  Section s(L, "attention",
            {"shards", "devices", "micro_batches", "max_batch", "kv_blocks", "block_size", "max_seq_len", "nodes"});
  AttentionSpec& a = state_of(L)->spec.attention;
  a.where = s.where();
  s.integer("shards", &a.shards);
  s.strings("devices", &a.devices);
  s.integer("micro_batches", &a.micro_batches);
  s.integer("max_batch", &a.max_batch);
  s.integer("kv_blocks", &a.kv_blocks);
  s.integer("block_size", &a.block_size);
  s.integer("max_seq_len", &a.max_seq_len);
  s.strings("nodes", &a.nodes);
  return 0;
}

int l_experts(lua_State* L) {
  Section s(L, "experts", {"instances", "slots", "devices", "placement", "nodes"});
  ExpertsSpec& e = state_of(L)->spec.experts;
  e.where = s.where();
  s.integer("instances", &e.instances);
  s.integer("slots", &e.slots);
  s.strings("devices", &e.devices);
  s.strings("nodes", &e.nodes);
  if (s.get("placement")) {
    if (lua_type(L, -1) == LUA_TSTRING) {
      if (std::string(lua_tostring(L, -1)) != "auto") s.fail("'placement' must be \"auto\" or a list of expert lists, one per instance");
      e.auto_placement = true;
    } else {
      e.placement = s.int_lists("placement");
      e.auto_placement = false;
    }
    lua_pop(L, 1);
  }
  return 0;
}

int l_router(lua_State* L) {
  Section s(L, "router", {"side"});
  RouterSpec& r = state_of(L)->spec.router;
  r.where = s.where();
  s.string("side", &r.side);
  if (r.side != "moe" && r.side != "attention") s.fail("'side' must be \"moe\" (EGate) or \"attention\" (AGate), got \"" + r.side + "\"");
  return 0;
}

int l_scheduler(lua_State* L) {
  Section s(L, "scheduler", {"policy", "seed"});
  SchedulerSpec& p = state_of(L)->spec.scheduler;
  p.where = s.where();
  s.string("policy", &p.policy);
  s.unsigned64("seed", &p.seed);
  return 0;
}

int l_simulate(lua_State* L) {
  Section s(L, "simulate",
            {"profile", "shape", "system", "duration_s", "device_gb", "memory_fraction", "gpus_per_node", "nic_gbps",
             "nic_latency_us", "nvlink_gbps", "nvlink_latency_us", "weight_load_gbps", "zipf", "sampled_layers", "seed",
             "micro_batches", "balance", "study_batches", "study_slos_ms", "study_prompt", "study_output", "max_devices"});
  SimulateSpec& m = state_of(L)->spec.simulate;
  m.where = s.where();
  s.string("profile", &m.profile);
  s.string("shape", &m.shape);
  if (m.shape != "model" && m.shape != "deepseek-v2") s.fail("'shape' must be \"model\" or \"deepseek-v2\", got \"" + m.shape + "\"");
  s.string("system", &m.system);
  if (m.system != "janus" && m.system != "megascale" && m.system != "monolithic")
    s.fail("'system' must be \"janus\", \"megascale\" or \"monolithic\", got \"" + m.system + "\"");
  auto num = [&](const char* k, double* out, double lo, double hi) {
    float v = static_cast<float>(*out);
    s.number(k, &v, lo, hi);
    if (v != static_cast<float>(*out)) *out = v;
  };
  num("duration_s", &m.duration_s, 0, 1e9);
  num("device_gb", &m.device_gb, 0.001, 1e6);
  num("memory_fraction", &m.memory_fraction, 0.01, 1);
  num("nic_gbps", &m.nic_gbps, 1e-3, 1e6);
  num("nic_latency_us", &m.nic_latency_us, 0, 1e6);
  num("nvlink_gbps", &m.nvlink_gbps, 1e-3, 1e7);
  num("nvlink_latency_us", &m.nvlink_latency_us, 0, 1e6);
  num("weight_load_gbps", &m.weight_load_gbps, 1e-3, 1e7);
  num("zipf", &m.zipf, 0, 10);
  num("balance", &m.balance, 1, 1e3);
  s.integer("gpus_per_node", &m.gpus_per_node);
  s.integer("sampled_layers", &m.sampled_layers);
  s.unsigned64("seed", &m.seed);
  s.integer("micro_batches", &m.micro_batches);
  s.integer("study_prompt", &m.study_prompt);
  s.integer("study_output", &m.study_output);
  s.integer("max_devices", &m.max_devices);
  auto numbers = [&](const char* k, auto* out) {
    if (!s.get(k)) return;
    if (!lua_istable(L, -1)) s.fail("'" + std::string(k) + "' must be a list of positive numbers");
    out->clear();
    const lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; ++i) {
      lua_geti(L, -1, i);
      if (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) <= 0)
        s.fail("'" + std::string(k) + "'[" + std::to_string(i) + "] must be a positive number");
      out->push_back(static_cast<typename std::decay_t<decltype(*out)>::value_type>(lua_tonumber(L, -1)));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (out->empty()) s.fail("'" + std::string(k) + "' must not be empty");
  };
  numbers("study_batches", &m.study_batches);
  numbers("study_slos_ms", &m.study_slos_ms);
  return 0;
}

int l_scaler(lua_State* L) {
  Section s(L, "scaler", {"recover", "policy", "profile", "tpot_slo_ms", "interval_s", "context", "min_attention",
                          "max_attention", "min_moe", "max_moe", "shrink_after"});
  ScalerSpec& sc = state_of(L)->spec.scaler;
  sc.where = s.where();
  s.boolean("recover", &sc.recover);
  s.string("policy", &sc.policy);
  if (sc.policy != "none" && sc.policy != "slo") s.fail("'policy' must be \"none\" or \"slo\", got \"" + sc.policy + "\"");
  s.string("profile", &sc.profile);
  float slo = static_cast<float>(sc.tpot_slo_ms), interval = static_cast<float>(sc.interval_s), ctx = static_cast<float>(sc.context);
  s.number("tpot_slo_ms", &slo, 1e-3, 1e6);
  s.number("interval_s", &interval, 1e-3, 1e6);
  s.number("context", &ctx, 1, 1e7);
  sc.tpot_slo_ms = slo;
  sc.interval_s = interval;
  sc.context = ctx;
  s.integer("min_attention", &sc.min_attention);
  s.integer("max_attention", &sc.max_attention);
  s.integer("min_moe", &sc.min_moe);
  s.integer("max_moe", &sc.max_moe);
  s.integer("shrink_after", &sc.shrink_after);
  if (sc.policy == "slo" && sc.profile.empty()) s.fail("policy \"slo\" needs 'profile' (the JSON that janus profile writes)");
  return 0;
}

// nodes{{name="a1", host="10.0.0.1"}, {name="m1"}, ...}: a list, so not a Section.
int l_nodes(lua_State* L) {
  const std::string where = caller_where(L);
  auto fail = [&](const std::string& m) {
    lua_pushstring(L, (where + ": nodes{}: " + m).c_str());
    lua_error(L);
  };
  LoadState* st = state_of(L);
  auto [it, fresh] = st->declared.emplace("nodes", where);
  if (!fresh) fail("given twice (first at " + it->second + ")");
  if (lua_gettop(L) != 1 || !lua_istable(L, 1)) fail("expects a list of nodes, as in nodes{{name=\"a1\", host=\"127.0.0.1\"}, ...}");
  const lua_Integer n = luaL_len(L, 1);
  if (n < 1) fail("lists no node");
  for (lua_Integer i = 1; i <= n; ++i) {
    lua_geti(L, 1, i);
    NodeSpec node;
    node.where = where;
    if (lua_type(L, -1) == LUA_TSTRING) {
      node.name = lua_tostring(L, -1);
    } else if (lua_istable(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2) != 0) {
        lua_pop(L, 1);
        const std::string k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
        if (k != "name" && k != "host") fail("node " + std::to_string(i) + ": unknown key '" + k + "' (keys: name, host)");
      }
      for (const char* k : {"name", "host"}) {
        lua_getfield(L, -1, k);
        if (!lua_isnil(L, -1)) {
          if (lua_type(L, -1) != LUA_TSTRING) fail("node " + std::to_string(i) + ": '" + k + "' must be a string");
          (std::string(k) == "name" ? node.name : node.host) = lua_tostring(L, -1);
        }
        lua_pop(L, 1);
      }
    } else {
      fail("node " + std::to_string(i) + " must be a table {name=..., host=...} or a name");
    }
    lua_pop(L, 1);
    st->spec.nodes.push_back(std::move(node));
  }
  return 0;
}

int l_coordinator(lua_State* L) {
  Section s(L, "coordinator", {"listen", "secret", "tls", "cert", "key", "ca", "join_timeout_s", "port_file"});
  CoordinatorSpec& c = state_of(L)->spec.coordinator;
  c.where = s.where();
  s.string("listen", &c.listen);
  s.string("secret", &c.secret);
  s.boolean("tls", &c.tls);
  s.string("cert", &c.tls_cert);
  s.string("key", &c.tls_key);
  s.string("ca", &c.tls_ca);
  s.string("port_file", &c.port_file);
  float t = static_cast<float>(c.join_timeout_s);
  s.number("join_timeout_s", &t, 0.1, 1e6);
  c.join_timeout_s = t;
  if (c.listen.find(':') == std::string::npos) s.fail("'listen' must be HOST:PORT (PORT 0: any free port), got \"" + c.listen + "\"");
  if (c.tls_cert.empty() != c.tls_key.empty()) s.fail("give both 'cert' and 'key' (PEM files), or neither");
  return 0;
}

int l_exchange(lua_State* L) {
  Section s(L, "exchange", {"mode", "transport", "spin_us", "probe"});
  ExchangeSpec& e = state_of(L)->spec.exchange;
  e.where = s.where();
  s.string("mode", &e.mode);
  if (e.mode != "single" && e.mode != "case1" && e.mode != "case2" && e.mode != "auto")
    s.fail("'mode' must be \"single\", \"case1\", \"case2\" or \"auto\", got \"" + e.mode + "\"");
  s.string("transport", &e.transport);
  if (e.transport != "auto" && e.transport != "tcp" && e.transport != "shm" && e.transport != "verbs")
    s.fail("'transport' must be \"auto\", \"tcp\", \"shm\" or \"verbs\", got \"" + e.transport + "\"");
  s.integer("spin_us", &e.spin_us, 0);
  s.boolean("probe", &e.probe);
  return 0;
}

// A length distribution: a number (fixed) or {dist=..., mean=, sigma=, min=, max=}.
void length_dist(const Section& s, lua_State* L, const char* key, LengthDist* d) {
  if (!s.get(key)) return;
  if (lua_type(L, -1) == LUA_TNUMBER) {
    d->kind = "fixed";
    d->mean = lua_tonumber(L, -1);
    if (d->mean < 1) s.fail(std::string("'") + key + "' must be at least 1");
  } else if (lua_istable(L, -1)) {
    for (const char* f : {"dist", "mean", "sigma", "min", "max"}) {
      lua_getfield(L, -1, f);
      if (!lua_isnil(L, -1)) {
        if (std::string(f) == "dist") {
          if (lua_type(L, -1) != LUA_TSTRING) s.fail(std::string("'") + key + ".dist' must be a string");
          d->kind = lua_tostring(L, -1);
        } else {
          if (lua_type(L, -1) != LUA_TNUMBER) s.fail(std::string("'") + key + "." + f + "' must be a number");
          const double v = lua_tonumber(L, -1);
          if (std::string(f) == "mean") d->mean = v;
          else if (std::string(f) == "sigma") d->sigma = v;
          else if (std::string(f) == "min") d->min = v;
          else d->max = v;
        }
      }
      lua_pop(L, 1);
    }
  } else {
    s.fail(std::string("'") + key + "' must be a number or a table such as {dist=\"lognormal\", mean=200, sigma=1}");
  }
  lua_pop(L, 1);
}

int l_workload(lua_State* L) {
  Section s(L, "workload", {"prompts", "max_new_tokens", "temperature", "top_p", "top_k", "seed", "ignore_eos", "arrivals",
                            "rate", "shape", "requests", "trace", "time_scale", "prompt_len", "output_len", "slo"});
  WorkloadSpec& w = state_of(L)->spec.workload;
  w.where = s.where();
  if (s.get("prompts")) {
    w.prompts = s.int_lists("prompts");
    lua_pop(L, 1);
  }
  s.integer("max_new_tokens", &w.max_new_tokens, 0);
  s.number("temperature", &w.temperature, 0.0, 100.0);
  s.number("top_p", &w.top_p, 0.0, 1.0);
  s.integer("top_k", &w.top_k, 0);
  s.unsigned64("seed", &w.seed);
  s.boolean("ignore_eos", &w.ignore_eos);
  ArrivalSpec& a = w.arrivals;
  s.string("arrivals", &a.kind);
  if (a.kind != "all" && a.kind != "poisson" && a.kind != "gamma" && a.kind != "trace")
    s.fail("'arrivals' must be \"all\", \"poisson\", \"gamma\" or \"trace\", got \"" + a.kind + "\"");
  if (s.get("rate")) {
    if (lua_type(L, -1) == LUA_TNUMBER) {
      a.rate = lua_tonumber(L, -1);
    } else if (lua_istable(L, -1)) {
      for (const auto& pt : s.number_pairs("rate")) a.rate_points.push_back(pt);
    } else {
      s.fail("'rate' must be requests per second, or a ramp {{t, rate}, ...}");
    }
    lua_pop(L, 1);
  }
  float shape = static_cast<float>(a.shape), scale = 1;
  s.number("shape", &shape, 1e-3, 1e3);
  a.shape = shape;
  s.integer("requests", &a.requests, 0);
  s.string("trace", &a.trace);
  if (!a.trace.empty()) a.kind = "trace";
  s.number("time_scale", &scale, 1e-6, 1e6);
  a.time_scale = scale;
  length_dist(s, L, "prompt_len", &a.prompt);
  length_dist(s, L, "output_len", &a.output);
  if (s.get("slo")) {
    if (!lua_istable(L, -1)) s.fail("'slo' must be a table such as {ttft_ms=1000, tpot_ms=100}");
    for (const char* f : {"ttft_ms", "tpot_ms"}) {
      lua_getfield(L, -1, f);
      if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) <= 0) s.fail(std::string("'slo.") + f + "' must be a positive number");
        (std::string(f) == "ttft_ms" ? w.slo_ttft_ms : w.slo_tpot_ms) = lua_tonumber(L, -1);
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  a.seed = w.seed + 1;
  return 0;
}

// Scenario actions: kill "expert-2", slow("expert-1", 50), scale{attention=2, moe=6}
// build action tables; at(t, action) schedules one.
int l_kill_action(lua_State* L) {
  luaL_checkstring(L, 1);
  lua_createtable(L, 0, 2);
  lua_pushstring(L, "kill");
  lua_setfield(L, -2, "op");
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "actor");
  return 1;
}

int l_slow_action(lua_State* L) {
  luaL_checkstring(L, 1);
  luaL_checknumber(L, 2);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, "slow");
  lua_setfield(L, -2, "op");
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "actor");
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "ms");
  return 1;
}

int l_scale_action(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushvalue(L, 1);
  lua_pushstring(L, "scale");
  lua_setfield(L, -2, "op");
  return 1;
}

int l_at(lua_State* L) {
  const std::string where = caller_where(L);
  auto fail = [&](const std::string& m) {
    lua_pushstring(L, (where + ": at(): " + m).c_str());
    lua_error(L);
  };
  if (lua_type(L, 1) != LUA_TNUMBER || lua_tonumber(L, 1) < 0) fail("the first argument is a time in seconds (>= 0)");
  if (!lua_istable(L, 2)) fail("the second argument is an action: kill \"name\", slow(\"name\", ms) or scale{attention=N, moe=N}");
  ScenarioEvent e;
  e.at_s = lua_tonumber(L, 1);
  e.where = where;
  lua_getfield(L, 2, "op");
  e.op = lua_isstring(L, -1) ? lua_tostring(L, -1) : "";
  lua_pop(L, 1);
  if (e.op == "kill" || e.op == "slow") {
    lua_getfield(L, 2, "actor");
    e.actor = lua_isstring(L, -1) ? lua_tostring(L, -1) : "";
    lua_pop(L, 1);
    lua_getfield(L, 2, "ms");
    e.ms = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
    lua_pop(L, 1);
  } else if (e.op == "scale") {
    lua_getfield(L, 2, "attention");
    e.attention = lua_isinteger(L, -1) ? static_cast<int>(lua_tointeger(L, -1)) : 0;
    lua_pop(L, 1);
    lua_getfield(L, 2, "moe");
    e.moe = lua_isinteger(L, -1) ? static_cast<int>(lua_tointeger(L, -1)) : 0;
    lua_pop(L, 1);
  } else {
    fail("unknown action (use kill \"name\", slow(\"name\", ms) or scale{attention=N, moe=N})");
  }
  state_of(L)->spec.scenario.push_back(e);
  return 0;
}

Result<GraphSpec> run_config(const std::function<Status(LuaSandbox&)>& load, const std::string& source) {
  // A config computes a graph: the base library, strings, tables, math; no io, os or
  // file loading, text chunks only, and a budget so that a loop that never ends fails.
  LuaSandbox sandbox;
  lua_State* L = sandbox.state();
  if (L == nullptr) return internal_error("cannot create a Lua state");
  LoadState st;
  st.spec.source = source;
  lua_pushlightuserdata(L, &st);
  lua_setfield(L, LUA_REGISTRYINDEX, "janus.config");
  const std::pair<const char*, lua_CFunction> api[] = {{"model", l_model},         {"attention", l_attention},
                                                       {"experts", l_experts},     {"router", l_router},
                                                       {"scheduler", l_scheduler}, {"workload", l_workload},
                                                       {"scaler", l_scaler}, {"simulate", l_simulate},         {"nodes", l_nodes},
                                                       {"coordinator", l_coordinator}, {"exchange", l_exchange},
                                                       {"at", l_at},               {"kill", l_kill_action},
                                                       {"slow", l_slow_action},    {"scale", l_scale_action}};
  for (const auto& [name, fn] : api) {
    lua_pushcfunction(L, fn);
    lua_setglobal(L, name);
  }
  JANUS_TRY(load(sandbox));
  JANUS_TRY(sandbox.call(0, 0));
  // Sections never called keep their defaults; name the file for their error messages.
  GraphSpec& g = st.spec;
  for (std::string* w : {&g.model.where, &g.attention.where, &g.experts.where, &g.router.where, &g.scheduler.where,
                         &g.scaler.where, &g.workload.where, &g.coordinator.where, &g.exchange.where})
    if (w->empty()) *w = source;
  if (g.model.path.empty() && g.model.preset.empty()) g.model.preset = "tiny-qwen3-moe";
  // Relative TLS files and profiles are relative to the config file, like the model path.
  for (std::string* f : {&g.coordinator.tls_cert, &g.coordinator.tls_key, &g.coordinator.tls_ca, &g.scaler.profile, &g.simulate.profile})
    if (!f->empty() && std::filesystem::path(*f).is_relative() && source.find('/') != std::string::npos && source[0] != '<')
      *f = (std::filesystem::path(source).parent_path() / *f).lexically_normal().string();
  // A relative model path is relative to the config file.
  if (!g.model.path.empty() && std::filesystem::path(g.model.path).is_relative() && source.find('/') != std::string::npos &&
      source[0] != '<')
    g.model.path = (std::filesystem::path(source).parent_path() / g.model.path).lexically_normal().string();
  return g;
}

}  // namespace

Result<GraphSpec> load_lua_config(const std::string& path) {
  if (!std::filesystem::exists(path)) return not_found(path + ": no such config file");
  return run_config([&](LuaSandbox& sandbox) { return sandbox.load_file(path); }, path);
}

Result<GraphSpec> load_lua_config_string(const std::string& code, const std::string& chunkname) {
  return run_config([&](LuaSandbox& sandbox) { return sandbox.load(code, "=" + chunkname); }, chunkname);
}

}  // namespace janus
