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

// Raises "config.lua:12: model{}: msg" as a Lua error; `what` names the call ("model{}", "at()").
[[noreturn]] void raise(lua_State* L, const std::string& where, const std::string& what, const std::string& msg) {
  lua_pushstring(L, (where + ": " + what + ": " + msg).c_str());
  lua_error(L);
  throw;  // unreachable: lua_error does not return
}

// Pushes field k of the table at idx; returns false (and pushes nothing) when absent.
bool get_field(lua_State* L, int idx, const char* k) {
  lua_getfield(L, idx, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return false;
  }
  return true;
}

class Section;

// One key a section accepts and how its value reaches the spec. The typed forms read a value of
// that type (and range) into the field when the key is given; a key with no reader is one the
// section reads itself after the table.
struct Key {
  using Read = std::function<void(const Section&, const char* key)>;
  Key(const char* name, Read read = nullptr) : name(name), read(std::move(read)) {}
  Key(const char* name, int* out, int min_value = 1);
  Key(const char* name, uint64_t* out);
  Key(const char* name, float* out, double lo, double hi);
  Key(const char* name, double* out, double lo, double hi);  // read as a float, like the float keys
  Key(const char* name, bool* out);
  Key(const char* name, std::string* out);
  Key(const char* name, std::string* out, std::vector<std::string> choices);  // refuses any other value
  Key(const char* name, std::vector<std::string>* out);                     // a string, or a list of strings
  Key(const char* name, std::vector<int>* out);                             // a list of positive numbers
  Key(const char* name, std::vector<double>* out);
  Key(const char* name, std::vector<std::vector<int32_t>>* out);           // a list of lists of integers

  const char* name;
  Read read;
};

// Reads the table argument of one section call: checks that it is given once, refuses unknown
// keys, then reads the keys in the order of `keys`; the fields of `where` say where it was called.
class Section {
 public:
  Section(lua_State* L, const char* name, std::string* where, std::vector<Key> keys) : L_(L), name_(name) {
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
      if (std::none_of(keys.begin(), keys.end(), [&](const Key& key) { return k == key.name; })) {
        std::string all;
        for (const Key& key : keys) all += (all.empty() ? "" : ", ") + std::string(key.name);
        fail("unknown key '" + k + "' (keys: " + all + ")");
      }
    }
    *where = where_;
    for (const Key& key : keys)
      if (key.read) key.read(*this, key.name);
  }

  [[noreturn]] void fail(const std::string& msg) const { raise(L_, where_, std::string(name_) + "{}", msg); }

  // Pushes field k; returns false (and pushes nothing) when absent.
  bool get(const char* k) const { return get_field(L_, 1, k); }

  void integer(const char* k, int* out, int min_value) const {
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

  // A double read as a float; a value equal to the default as a float keeps the default's precision.
  void number(const char* k, double* out, double lo, double hi) const {
    float v = static_cast<float>(*out);
    number(k, &v, lo, hi);
    if (v != static_cast<float>(*out)) *out = v;
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

  // "'mode' must be \"a\", \"b\" or \"c\", got \"x\"" unless the value (given or default) is a choice.
  void one_of(const char* k, std::string* out, const std::vector<std::string>& choices) const {
    string(k, out);
    if (std::find(choices.begin(), choices.end(), *out) != choices.end()) return;
    std::string listed;
    for (size_t i = 0; i < choices.size(); ++i)
      listed += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + ("\"" + choices[i] + "\"");
    fail("'" + std::string(k) + "' must be " + listed + ", got \"" + *out + "\"");
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

  // A non-empty list of positive numbers (batch sizes, SLOs).
  template <typename T>
  void positive_numbers(const char* k, std::vector<T>* out) const {
    if (!get(k)) return;
    if (!lua_istable(L_, -1)) fail("'" + std::string(k) + "' must be a list of positive numbers");
    out->clear();
    const lua_Integer n = luaL_len(L_, -1);
    for (lua_Integer i = 1; i <= n; ++i) {
      lua_geti(L_, -1, i);
      if (lua_type(L_, -1) != LUA_TNUMBER || lua_tonumber(L_, -1) <= 0)
        fail("'" + std::string(k) + "'[" + std::to_string(i) + "] must be a positive number");
      out->push_back(static_cast<T>(lua_tonumber(L_, -1)));
      lua_pop(L_, 1);
    }
    lua_pop(L_, 1);
    if (out->empty()) fail("'" + std::string(k) + "' must not be empty");
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

  // A list of lists of non-negative integers (prompts, placements), the value on top of the stack.
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

  void int_lists(const char* k, std::vector<std::vector<int32_t>>* out) const {
    if (!get(k)) return;
    *out = int_lists(k);
    lua_pop(L_, 1);
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
  std::string where_;
};

Key::Key(const char* name, int* out, int min_value)
    : Key(name, [=](const Section& s, const char* k) { s.integer(k, out, min_value); }) {}
Key::Key(const char* name, uint64_t* out) : Key(name, [=](const Section& s, const char* k) { s.unsigned64(k, out); }) {}
Key::Key(const char* name, float* out, double lo, double hi)
    : Key(name, [=](const Section& s, const char* k) { s.number(k, out, lo, hi); }) {}
Key::Key(const char* name, double* out, double lo, double hi)
    : Key(name, [=](const Section& s, const char* k) { s.number(k, out, lo, hi); }) {}
Key::Key(const char* name, bool* out) : Key(name, [=](const Section& s, const char* k) { s.boolean(k, out); }) {}
Key::Key(const char* name, std::string* out) : Key(name, [=](const Section& s, const char* k) { s.string(k, out); }) {}
Key::Key(const char* name, std::string* out, std::vector<std::string> choices)
    : Key(name, [=](const Section& s, const char* k) { s.one_of(k, out, choices); }) {}
Key::Key(const char* name, std::vector<std::string>* out) : Key(name, [=](const Section& s, const char* k) { s.strings(k, out); }) {}
Key::Key(const char* name, std::vector<int>* out) : Key(name, [=](const Section& s, const char* k) { s.positive_numbers(k, out); }) {}
Key::Key(const char* name, std::vector<double>* out)
    : Key(name, [=](const Section& s, const char* k) { s.positive_numbers(k, out); }) {}
Key::Key(const char* name, std::vector<std::vector<int32_t>>* out)
    : Key(name, [=](const Section& s, const char* k) { s.int_lists(k, out); }) {}

int l_model(lua_State* L) {
  ModelSpec& m = state_of(L)->spec.model;
  Section s(L, "model", &m.where, {{"path", &m.path}, {"preset", &m.preset}, {"seed", &m.seed}, {"dtype", &m.dtype}});
  if (m.path.empty() == m.preset.empty()) s.fail("give exactly one of 'path' and 'preset'");
  if (!m.dtype.empty() && m.dtype != "f32" && m.dtype != "bf16" && m.dtype != "f16")
    s.fail("'dtype' must be \"f32\", \"bf16\" or \"f16\", got \"" + m.dtype + "\"");
  return 0;
}

int l_attention(lua_State* L) {
  AttentionSpec& a = state_of(L)->spec.attention;
  Section(L, "attention", &a.where,
          {{"shards", &a.shards}, {"devices", &a.devices}, {"micro_batches", &a.micro_batches}, {"max_batch", &a.max_batch},
           {"kv_blocks", &a.kv_blocks}, {"block_size", &a.block_size}, {"max_seq_len", &a.max_seq_len}, {"nodes", &a.nodes}});
  return 0;
}

int l_experts(lua_State* L) {
  ExpertsSpec& e = state_of(L)->spec.experts;
  Section s(L, "experts", &e.where,
            {{"instances", &e.instances}, {"slots", &e.slots}, {"devices", &e.devices}, {"placement"}, {"nodes", &e.nodes}});
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
  RouterSpec& r = state_of(L)->spec.router;
  Section s(L, "router", &r.where, {{"side", &r.side}});
  if (r.side != "moe" && r.side != "attention") s.fail("'side' must be \"moe\" (EGate) or \"attention\" (AGate), got \"" + r.side + "\"");
  return 0;
}

int l_scheduler(lua_State* L) {
  SchedulerSpec& p = state_of(L)->spec.scheduler;
  Section(L, "scheduler", &p.where, {{"policy", &p.policy}, {"seed", &p.seed}});
  return 0;
}

int l_simulate(lua_State* L) {
  SimulateSpec& m = state_of(L)->spec.simulate;
  Section(L, "simulate", &m.where,
          {{"profile", &m.profile},
           {"shape", &m.shape, {"model", "deepseek-v2"}},
           {"system", &m.system, {"janus", "megascale", "monolithic"}},
           {"duration_s", &m.duration_s, 0, 1e9},
           {"device_gb", &m.device_gb, 0.001, 1e6},
           {"memory_fraction", &m.memory_fraction, 0.01, 1},
           {"gpus_per_node", &m.gpus_per_node},
           {"nic_gbps", &m.nic_gbps, 1e-3, 1e6},
           {"nic_latency_us", &m.nic_latency_us, 0, 1e6},
           {"nvlink_gbps", &m.nvlink_gbps, 1e-3, 1e7},
           {"nvlink_latency_us", &m.nvlink_latency_us, 0, 1e6},
           {"weight_load_gbps", &m.weight_load_gbps, 1e-3, 1e7},
           {"zipf", &m.zipf, 0, 10},
           {"sampled_layers", &m.sampled_layers},
           {"seed", &m.seed},
           {"micro_batches", &m.micro_batches},
           {"balance", &m.balance, 1, 1e3},
           {"study_batches", &m.study_batches},
           {"study_slos_ms", &m.study_slos_ms},
           {"study_prompt", &m.study_prompt},
           {"study_output", &m.study_output},
           {"max_devices", &m.max_devices}});
  return 0;
}

int l_scaler(lua_State* L) {
  ScalerSpec& sc = state_of(L)->spec.scaler;
  Section s(L, "scaler", &sc.where,
            {{"recover", &sc.recover}, {"policy", &sc.policy, {"none", "slo"}}, {"profile", &sc.profile},
             {"tpot_slo_ms", &sc.tpot_slo_ms, 1e-3, 1e6}, {"interval_s", &sc.interval_s, 1e-3, 1e6},
             {"context", &sc.context, 1, 1e7}, {"min_attention", &sc.min_attention}, {"max_attention", &sc.max_attention},
             {"min_moe", &sc.min_moe}, {"max_moe", &sc.max_moe}, {"shrink_after", &sc.shrink_after}});
  if (sc.policy == "slo" && sc.profile.empty()) s.fail("policy \"slo\" needs 'profile' (the JSON that janus profile writes)");
  return 0;
}

// nodes{{name="a1", host="10.0.0.1"}, {name="m1"}, ...}: a list, so not a Section.
int l_nodes(lua_State* L) {
  const std::string where = caller_where(L);
  auto fail = [&](const std::string& m) { raise(L, where, "nodes{}", m); };
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
      for (auto [k, out] : {std::pair{"name", &node.name}, std::pair{"host", &node.host}}) {
        if (!get_field(L, -1, k)) continue;
        if (lua_type(L, -1) != LUA_TSTRING) fail("node " + std::to_string(i) + ": '" + k + "' must be a string");
        *out = lua_tostring(L, -1);
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
  CoordinatorSpec& c = state_of(L)->spec.coordinator;
  Section s(L, "coordinator", &c.where,
            {{"listen", &c.listen}, {"secret", &c.secret}, {"tls", &c.tls}, {"cert", &c.tls_cert}, {"key", &c.tls_key},
             {"ca", &c.tls_ca}, {"join_timeout_s", &c.join_timeout_s, 0.1, 1e6}, {"port_file", &c.port_file}});
  if (c.listen.find(':') == std::string::npos) s.fail("'listen' must be HOST:PORT (PORT 0: any free port), got \"" + c.listen + "\"");
  if (c.tls_cert.empty() != c.tls_key.empty()) s.fail("give both 'cert' and 'key' (PEM files), or neither");
  return 0;
}

int l_exchange(lua_State* L) {
  ExchangeSpec& e = state_of(L)->spec.exchange;
  Section(L, "exchange", &e.where,
          {{"mode", &e.mode, {"single", "case1", "case2", "auto"}},
           {"transport", &e.transport, {"auto", "tcp", "shm", "verbs"}},
           {"spin_us", &e.spin_us, 0},
           {"probe", &e.probe}});
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
    if (get_field(L, -1, "dist")) {
      if (lua_type(L, -1) != LUA_TSTRING) s.fail(std::string("'") + key + ".dist' must be a string");
      d->kind = lua_tostring(L, -1);
      lua_pop(L, 1);
    }
    for (auto [f, out] : {std::pair{"mean", &d->mean}, std::pair{"sigma", &d->sigma}, std::pair{"min", &d->min}, std::pair{"max", &d->max}}) {
      if (!get_field(L, -1, f)) continue;
      if (lua_type(L, -1) != LUA_TNUMBER) s.fail(std::string("'") + key + "." + f + "' must be a number");
      *out = lua_tonumber(L, -1);
      lua_pop(L, 1);
    }
  } else {
    s.fail(std::string("'") + key + "' must be a number or a table such as {dist=\"lognormal\", mean=200, sigma=1}");
  }
  lua_pop(L, 1);
}

int l_workload(lua_State* L) {
  WorkloadSpec& w = state_of(L)->spec.workload;
  ArrivalSpec& a = w.arrivals;
  Section(L, "workload", &w.where,
          {{"prompts", &w.prompts},
           {"max_new_tokens", &w.max_new_tokens, 0},
           {"temperature", &w.temperature, 0.0, 100.0},
           {"top_p", &w.top_p, 0.0, 1.0},
           {"top_k", &w.top_k, 0},
           {"seed", &w.seed},
           {"ignore_eos", &w.ignore_eos},
           {"arrivals", &a.kind, {"all", "poisson", "gamma", "trace"}},
           {"rate",
            [&](const Section& s, const char* k) {
              if (!s.get(k)) return;
              if (lua_type(L, -1) == LUA_TNUMBER) {
                a.rate = lua_tonumber(L, -1);
              } else if (lua_istable(L, -1)) {
                for (const auto& pt : s.number_pairs(k)) a.rate_points.push_back(pt);
              } else {
                s.fail("'rate' must be requests per second, or a ramp {{t, rate}, ...}");
              }
              lua_pop(L, 1);
            }},
           {"shape", &a.shape, 1e-3, 1e3},
           {"requests", &a.requests, 0},
           {"trace", &a.trace},
           {"time_scale", &a.time_scale, 1e-6, 1e6},
           {"prompt_len", [&](const Section& s, const char* k) { length_dist(s, L, k, &a.prompt); }},
           {"output_len", [&](const Section& s, const char* k) { length_dist(s, L, k, &a.output); }},
           {"slo", [&](const Section& s, const char* k) {
              if (!s.get(k)) return;
              if (!lua_istable(L, -1)) s.fail("'slo' must be a table such as {ttft_ms=1000, tpot_ms=100}");
              for (auto [f, out] : {std::pair{"ttft_ms", &w.slo_ttft_ms}, std::pair{"tpot_ms", &w.slo_tpot_ms}}) {
                if (!get_field(L, -1, f)) continue;
                if (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) <= 0) s.fail(std::string("'slo.") + f + "' must be a positive number");
                *out = lua_tonumber(L, -1);
                lua_pop(L, 1);
              }
              lua_pop(L, 1);
            }}});
  if (!a.trace.empty()) a.kind = "trace";
  a.seed = w.seed + 1;
  return 0;
}

// Scenario actions: kill "expert-2", slow("expert-1", 50), scale{attention=2, moe=6}
// build action tables; at(t, action) schedules one.
// Pushes {op=op, actor=<the first argument>}, with room for `more` fields.
void push_actor_action(lua_State* L, const char* op, int more) {
  lua_createtable(L, 0, 2 + more);
  lua_pushstring(L, op);
  lua_setfield(L, -2, "op");
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "actor");
}

int l_kill_action(lua_State* L) {
  luaL_checkstring(L, 1);
  push_actor_action(L, "kill", 0);
  return 1;
}

int l_slow_action(lua_State* L) {
  luaL_checkstring(L, 1);
  luaL_checknumber(L, 2);
  push_actor_action(L, "slow", 1);
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
  auto fail = [&](const std::string& m) { raise(L, where, "at()", m); };
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
