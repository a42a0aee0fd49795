#include "runtime/console/console_engine.h"
#include "runtime/config/lua_sandbox.h"

// The C++ build of Lua: errors unwind as exceptions.
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

namespace janus {

using nlohmann::json;

namespace {

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string ms(double seconds) { return seconds < 0 ? "-" : fmt("%.2f ms", seconds * 1e3); }

// Lua value <-> JSON, for returning command data as tables and taking tables as arguments.
void push_json(lua_State* L, const json& j) {
  if (j.is_null()) lua_pushnil(L);
  else if (j.is_boolean()) lua_pushboolean(L, j.get<bool>());
  else if (j.is_number_integer()) lua_pushinteger(L, j.get<lua_Integer>());
  else if (j.is_number()) lua_pushnumber(L, j.get<double>());
  else if (j.is_string()) lua_pushstring(L, j.get<std::string>().c_str());
  else if (j.is_array()) {
    lua_createtable(L, static_cast<int>(j.size()), 0);
    for (size_t i = 0; i < j.size(); ++i) {
      push_json(L, j[i]);
      lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
    }
  } else {
    lua_createtable(L, 0, static_cast<int>(j.size()));
    for (auto it = j.begin(); it != j.end(); ++it) {
      push_json(L, it.value());
      lua_setfield(L, -2, it.key().c_str());
    }
  }
}

struct CommandHelp {
  const char* name;
  const char* usage;
  const char* what;
};

const CommandHelp kHelp[] = {
    {"actors", "actors()", "every actor: kind, device, node, mailbox depth, messages handled, busy %"},
    {"graph", "graph()", "the actor graph, drawn as text"},
    {"requests", "requests()", "live requests: state, shard, tokens so far, age, TTFT"},
    {"trace", "trace(id)", "where request id's micro-batches were, layer by layer, and how long"},
    {"experts", "experts(layer)", "heat map of expert activations per expert and per instance"},
    {"placement", "placement()", "which expert replicas each instance holds"},
    {"amax", "amax()", "a_max (most distinct experts on one instance) per layer, per policy"},
    {"pause", "pause()", "stop at the next step boundary"},
    {"step", "step(n)", "run n steps, then stay paused"},
    {"resume", "resume()", "run freely again"},
    {"kill", "kill(name)", "kill an actor (fault injection)"},
    {"slow", "slow(name, ms)", "delay every message an actor handles by ms (0 undoes)"},
    {"scale", "scale{attention=N, moe=N}", "rescale the deployment"},
    {"generate", "generate({ids...}, {max_new_tokens=N})", "run one request and print its tokens"},
    {"watch", "watch()", "live top-like view, refreshed until a key is pressed"},
    {"help", "help()", "this list"},
};

}  // namespace

std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(header.size(), 0);
  auto width = [](const std::string& s) {  // display width: count UTF-8 code points
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xc0) != 0x80;
    return n;
  };
  for (size_t c = 0; c < header.size(); ++c) w[c] = width(header[c]);
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size() && c < w.size(); ++c) w[c] = std::max(w[c], width(r[c]));
  std::ostringstream o;
  auto line = [&](const std::vector<std::string>& r) {
    for (size_t c = 0; c < w.size(); ++c) {
      const std::string& v = c < r.size() ? r[c] : "";
      // Numbers (and units after them) right-aligned, words left-aligned.
      const bool numeric = !v.empty() && (std::isdigit(static_cast<unsigned char>(v[0])) || v[0] == '-');
      const std::string pad(w[c] - width(v), ' ');
      o << (c ? "  " : "") << (numeric ? pad + v : v + (c + 1 < w.size() ? pad : ""));
    }
    o << "\n";
  };
  line(header);
  std::vector<std::string> rule;
  for (size_t c = 0; c < w.size(); ++c) rule.push_back(std::string(w[c], '-'));
  line(rule);
  for (const auto& r : rows) line(r);
  return o.str();
}

std::string shade(uint64_t v, uint64_t max) {
  static const char* kLevels[] = {" ", "░", "▒", "▓", "█"};
  if (v == 0 || max == 0) return kLevels[0];
  const int i = 1 + static_cast<int>(std::min<uint64_t>(3, (v * 4 - 1) / max));
  return kLevels[i];
}

// The Lua functions, with the engine in the registry.
struct ConsoleBindings {
  static ConsoleEngine& engine(lua_State* L) {
    lua_getfield(L, LUA_REGISTRYINDEX, "janus.console");
    auto* e = static_cast<ConsoleEngine*>(lua_touserdata(L, -1));
    lua_pop(L, 1);
    return *e;
  }

  // Prints `text` (or `data` as JSON in JSON mode) and returns `data` to Lua.
  static int emit(lua_State* L, const json& data, const std::string& text) {
    ConsoleEngine& e = engine(L);
    e.out_ += e.json_ ? data.dump() + "\n" : text;
    e.printed_ = true;
    push_json(L, data);
    return 1;
  }

  [[noreturn]] static void fail(lua_State* L, const std::string& what, const Status& s) {
    luaL_error(L, "%s: %s", what.c_str(), s.message().c_str());
    throw;  // unreachable
  }

  static std::string name_arg(lua_State* L, int i, const char* fn) {
    if (lua_type(L, i) != LUA_TSTRING) luaL_error(L, "%s: the actor name must be a string, as in %s(\"expert-1\")", fn, fn);
    return lua_tostring(L, i);
  }

  static json actors_json(ConsoleEngine& e, std::string* text) {
    json arr = json::array();
    std::vector<std::vector<std::string>> rows;
    for (const ActorSnapshot& a : e.d_.actors()) {
      arr.push_back({{"name", a.name}, {"kind", a.kind}, {"device", a.device}, {"node", a.node}, {"alive", a.alive}, {"mailbox", a.mailbox},
                     {"messages", a.messages}, {"busy_fraction", a.busy_fraction}, {"busy_s", a.busy_s}, {"dropped", a.dropped},
                     {"slow_ms", a.slow_ms}});
      if (!a.alive) {
        rows.push_back({a.name, a.kind, a.device, a.node, "down", "-", "-", "-", "-", "-"});
        continue;
      }
      rows.push_back({a.name, a.kind, a.device, a.node, "up", std::to_string(a.mailbox) + " msgs", std::to_string(a.messages),
                      fmt("%.1f %%", 100 * a.busy_fraction), std::to_string(a.dropped),
                      a.slow_ms > 0 ? fmt("%.0f ms", a.slow_ms) : "-"});
    }
    if (text)
      *text = format_table({"name", "kind", "device", "node", "state", "mailbox", "handled", "busy", "dropped", "slowed"}, rows);
    return arr;
  }

  static int l_actors(lua_State* L) {
    std::string text;
    json j = actors_json(engine(L), &text);
    return emit(L, j, text);
  }

  static int l_graph(lua_State* L) {
    ConsoleEngine& e = engine(L);
    const GraphSpec& s = e.d_.spec();
    std::ostringstream o;
    json j = {{"shards", s.attention.shards}, {"instances", s.experts.instances}, {"router", s.router.side},
              {"policy", s.scheduler.policy}, {"micro_batches", s.attention.micro_batches}};
    o << "frontend ──► ";
    for (int i = 0; i < s.attention.shards; ++i) o << (i ? ", " : "") << "attention-" << i;
    o << "  (" << s.attention.micro_batches << " micro-batch" << (s.attention.micro_batches > 1 ? "es" : "") << ")\n";
    if (s.egate()) o << "  attention-* ──h──► router ──routed batch──► scheduler (" << s.scheduler.policy << ")\n";
    else o << "  attention-i ──► router-i (gate) ──routed rows──► scheduler (" << s.scheduler.policy << ")\n";
    o << "  scheduler ──work──► ";
    for (int i = 0; i < s.experts.instances; ++i) o << (i ? ", " : "") << "expert-" << i;
    o << "\n  expert-* ──partial sums──► scheduler ──combined rows──► attention-*\n";
    o << "  tokens ──► frontend; membership and epochs: scaler\n";
    o << "  kv cache: " << kv_cache_summary(e.d_.model().config()) << "\n";
    return emit(L, j, o.str());
  }

  static int l_requests(lua_State* L) {
    ConsoleEngine& e = engine(L);
    json arr = json::array();
    std::vector<std::vector<std::string>> rows;
    for (const RequestSnapshot& r : e.d_.requests()) {
      arr.push_back({{"id", r.id}, {"state", r.state}, {"shard", r.shard}, {"prompt_tokens", r.prompt_tokens},
                     {"generated", r.generated}, {"max_new_tokens", r.max_new_tokens}, {"age_s", r.age_s}, {"ttft_s", r.ttft_s}});
      rows.push_back({std::to_string(r.id), r.state, r.shard < 0 ? "-" : "attention-" + std::to_string(r.shard),
                      std::to_string(r.prompt_tokens), std::to_string(r.generated) + "/" + std::to_string(r.max_new_tokens),
                      fmt("%.0f ms", r.age_s * 1e3), ms(r.ttft_s)});
    }
    std::string text = rows.empty() ? "no live requests\n"
                                    : format_table({"id", "state", "shard", "prompt", "generated", "age", "TTFT"}, rows);
    return emit(L, arr, text);
  }

  static int l_trace(lua_State* L) {
    ConsoleEngine& e = engine(L);
    lua_Integer id = luaL_checkinteger(L, 1);
    auto t = e.d_.trace(static_cast<uint64_t>(id));
    if (!t.ok()) fail(L, "trace(" + std::to_string(id) + ")", t.status());
    json arr = json::array();
    std::vector<std::vector<std::string>> rows;
    const double t0 = t->spans.empty() ? 0 : t->spans.front().start_s;
    for (const TraceSpan& s : t->spans) {
      arr.push_back({{"actor", s.actor}, {"what", s.what}, {"step", s.step}, {"layer", s.layer}, {"micro_batch", s.micro_batch},
                     {"start_ms", (s.start_s - t0) * 1e3}, {"duration_ms", (s.end_s - s.start_s) * 1e3}});
      rows.push_back({std::to_string(s.step), s.layer < 0 ? "-" : std::to_string(s.layer), std::to_string(s.micro_batch), s.actor,
                      s.what, fmt("+%.3f ms", (s.start_s - t0) * 1e3), fmt("%.3f ms", (s.end_s - s.start_s) * 1e3)});
    }
    std::string text = "request " + std::to_string(id) + ": " + std::to_string(t->spans.size()) + " spans\n" +
                       format_table({"step", "layer", "mb", "actor", "stage", "start", "took"}, rows);
    return emit(L, json{{"id", id}, {"spans", arr}}, text);
  }

  static int l_experts(lua_State* L) {
    ConsoleEngine& e = engine(L);
    lua_Integer layer = luaL_checkinteger(L, 1);
    auto h = e.d_.experts(static_cast<int>(layer));
    if (!h.ok()) fail(L, "experts(" + std::to_string(layer) + ")", h.status());
    const uint64_t max_e = *std::max_element(h->per_expert.begin(), h->per_expert.end());
    uint64_t max_r = 0;
    for (uint64_t v : h->per_instance_expert) max_r = std::max(max_r, v);
    std::ostringstream o;
    o << "layer " << layer << ": activations (token choices) per expert and per instance, shaded relative to the busiest"
      << " (max " << max_e << " per expert, " << max_r << " per replica)\n";
    o << "expert      ";
    for (int x = 0; x < h->num_experts; ++x) o << (x % 10 == 0 ? std::to_string((x / 10) % 10) : " ");
    o << "\n            ";
    for (int x = 0; x < h->num_experts; ++x) o << x % 10;
    o << "\nall         ";
    for (int x = 0; x < h->num_experts; ++x) o << shade(h->per_expert[static_cast<size_t>(x)], max_e);
    o << "\n";
    json inst = json::array();
    for (int i = 0; i < h->num_instances; ++i) {
      char label[32];
      std::snprintf(label, sizeof label, "expert-%-5d", i);
      o << label;
      uint64_t total = 0;
      json row = json::array();
      for (int x = 0; x < h->num_experts; ++x) {
        const uint64_t v = h->per_instance_expert[static_cast<size_t>(i * h->num_experts + x)];
        const auto& held = h->placement[static_cast<size_t>(i)];
        const bool holds = std::find(held.begin(), held.end(), x) != held.end();
        o << (v > 0 ? shade(v, max_r) : holds ? "·" : " ");
        total += v;
        row.push_back(v);
      }
      o << "  " << total << " activations\n";
      inst.push_back(row);
    }
    o << "(· = holds the expert, no activations; blank = does not hold it)\n";
    return emit(L, json{{"layer", layer}, {"per_expert", h->per_expert}, {"per_instance", inst}}, o.str());
  }

  static int l_placement(lua_State* L) {
    ConsoleEngine& e = engine(L);
    const auto p = e.d_.placement();
    std::vector<std::vector<std::string>> rows;
    for (size_t i = 0; i < p.size(); ++i) {
      std::string experts;
      for (int32_t x : p[i]) experts += (experts.empty() ? "" : " ") + std::to_string(x);
      rows.push_back({"expert-" + std::to_string(i), std::to_string(p[i].size()) + "/" + std::to_string(e.d_.spec().experts.slots),
                      experts});
    }
    return emit(L, json(p), format_table({"instance", "slots used", "experts"}, rows));
  }

  static int l_amax(lua_State* L) {
    ConsoleEngine& e = engine(L);
    json arr = json::array();
    std::vector<std::vector<std::string>> rows;
    for (const PolicyAmax& p : e.d_.amax_by_policy())
      for (const LayerAmax& l : p.layers) {
        arr.push_back({{"policy", p.policy}, {"active", p.active}, {"layer", l.layer}, {"mean", l.mean}, {"max", l.max},
                       {"batches", l.batches}});
        rows.push_back({p.policy + (p.active ? " (active)" : ""), std::to_string(l.layer), fmt("%.2f experts", l.mean),
                        std::to_string(l.max) + " experts", std::to_string(l.batches)});
      }
    std::string text = format_table({"policy", "layer", "mean a_max", "max a_max", "layer batches"}, rows);
    return emit(L, arr, text);
  }

  static int clock(lua_State* L, const char* what, Result<StepClock> c) {
    if (!c.ok()) fail(L, what, c.status());
    json j = {{"paused", c->paused}, {"budget", c->budget}, {"step", c->step}, {"in_step", c->in_step}};
    std::string text = std::string(c->paused ? "paused" : "running") + " at step " + std::to_string(c->step) +
                       (c->budget > 0 ? ", " + std::to_string(c->budget) + " more step(s) allowed" : "") + "\n";
    return emit(L, j, text);
  }
  static int l_pause(lua_State* L) { return clock(L, "pause()", engine(L).d_.pause()); }
  static int l_resume(lua_State* L) { return clock(L, "resume()", engine(L).d_.resume()); }
  static int l_step(lua_State* L) {
    lua_Integer n = luaL_optinteger(L, 1, 1);
    if (n < 1 || n > 1000000) luaL_error(L, "step(n): n must be between 1 and 1000000, got %d", static_cast<int>(n));
    return clock(L, "step(n)", engine(L).d_.step(static_cast<int>(n)));
  }

  static int l_kill(lua_State* L) {
    const std::string name = name_arg(L, 1, "kill");
    Status s = engine(L).d_.kill(name);
    if (!s.ok()) fail(L, "kill(\"" + name + "\")", s);
    return emit(L, json{{"killed", name}}, "killed " + name + "\n");
  }

  static int l_slow(lua_State* L) {
    const std::string name = name_arg(L, 1, "slow");
    const double delay = luaL_checknumber(L, 2);
    Status s = engine(L).d_.slow(name, delay);
    if (!s.ok()) fail(L, "slow(\"" + name + "\")", s);
    return emit(L, json{{"actor", name}, {"slow_ms", delay}}, name + " now waits " + fmt("%.1f ms", delay) + " per message\n");
  }

  static int l_scale(lua_State* L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    ConsoleEngine& e = engine(L);
    // An omitted count keeps the current one.
    int a = 0, m = 0;
    for (const ActorSnapshot& x : e.d_.actors()) {
      if (!x.alive) continue;
      a += x.kind == "AttentionShard";
      m += x.kind == "ExpertInstance";
    }
    lua_getfield(L, 1, "attention");
    if (!lua_isnil(L, -1)) a = static_cast<int>(luaL_checkinteger(L, -1));
    lua_getfield(L, 1, "moe");
    if (!lua_isnil(L, -1)) m = static_cast<int>(luaL_checkinteger(L, -1));
    lua_pop(L, 2);
    Status s = e.d_.scale(a, m);
    if (!s.ok()) fail(L, "scale", s);
    return emit(L, json{{"attention", a}, {"moe", m}}, "scaled to " + std::to_string(a) + " attention shards, " +
                                                         std::to_string(m) + " expert instances\n");
  }

  static int l_generate(lua_State* L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    GenerateRequest r;
    const lua_Integer n = luaL_len(L, 1);
    for (lua_Integer i = 1; i <= n; ++i) {
      lua_geti(L, 1, i);
      int ok = 0;
      lua_Integer v = lua_tointegerx(L, -1, &ok);
      if (!ok) luaL_error(L, "generate: token %d is not an integer", static_cast<int>(i));
      r.prompt.push_back(static_cast<int32_t>(v));
      lua_pop(L, 1);
    }
    if (lua_istable(L, 2)) {
      lua_getfield(L, 2, "max_new_tokens");
      if (!lua_isnil(L, -1)) r.max_new_tokens = static_cast<int>(luaL_checkinteger(L, -1));
      lua_pop(L, 1);
    }
    auto h = engine(L).d_.submit(r);
    if (h.result.wait_for(std::chrono::seconds(120)) != std::future_status::ready)
      luaL_error(L, "generate: no answer within 120 s (is the deployment paused? try resume())");
    auto res = h.result.get();
    if (!res.ok()) fail(L, "generate", res.status());
    std::string toks;
    for (int32_t t : res->tokens) toks += (toks.empty() ? "" : " ") + std::to_string(t);
    return emit(L, json{{"id", h.id}, {"prompt", res->prompt}, {"tokens", res->tokens}, {"finish_reason", res->finish_reason}},
                "request " + std::to_string(h.id) + ": " + std::to_string(res->tokens.size()) + " tokens (" + res->finish_reason +
                    "): " + toks + "\n");
  }

  static int l_watch(lua_State* L) {
    ConsoleEngine& e = engine(L);
    e.watch_ = true;
    e.printed_ = true;
    return 0;
  }

  static int l_help(lua_State* L) {
    std::vector<std::vector<std::string>> rows;
    json arr = json::array();
    for (const CommandHelp& c : kHelp) {
      rows.push_back({c.usage, c.what});
      arr.push_back({{"command", c.name}, {"usage", c.usage}, {"help", c.what}});
    }
    return emit(L, arr, format_table({"command", "what it does"}, rows) + "Anything else is Lua.\n");
  }

  // print() goes to the console output, not the process's stdout.
  static int l_print(lua_State* L) {
    ConsoleEngine& e = engine(L);
    const int n = lua_gettop(L);
    for (int i = 1; i <= n; ++i) {
      e.out_ += (i > 1 ? "\t" : "");
      e.out_ += luaL_tolstring(L, i, nullptr);
      lua_pop(L, 1);
    }
    e.out_ += "\n";
    e.printed_ = true;
    return 0;
  }
};

// Sandboxed like configs (runtime/config/lua_sandbox.h): whoever holds the console secret
// may steer the deployment, not read files, load bytecode or wedge the console.
ConsoleEngine::ConsoleEngine(Deployment& d) : d_(d), sandbox_(std::make_unique<LuaSandbox>()), L_(sandbox_->state()) {
  lua_pushlightuserdata(L_, this);
  lua_setfield(L_, LUA_REGISTRYINDEX, "janus.console");
  const std::pair<const char*, lua_CFunction> fns[] = {
      {"actors", ConsoleBindings::l_actors},   {"graph", ConsoleBindings::l_graph},     {"requests", ConsoleBindings::l_requests},
      {"trace", ConsoleBindings::l_trace},     {"experts", ConsoleBindings::l_experts}, {"placement", ConsoleBindings::l_placement},
      {"amax", ConsoleBindings::l_amax},       {"pause", ConsoleBindings::l_pause},     {"step", ConsoleBindings::l_step},
      {"resume", ConsoleBindings::l_resume},   {"kill", ConsoleBindings::l_kill},       {"slow", ConsoleBindings::l_slow},
      {"scale", ConsoleBindings::l_scale},     {"generate", ConsoleBindings::l_generate}, {"watch", ConsoleBindings::l_watch},
      {"help", ConsoleBindings::l_help},       {"print", ConsoleBindings::l_print}};
  for (const auto& [name, fn] : fns) {
    lua_pushcfunction(L_, fn);
    lua_setglobal(L_, name);
  }
}

ConsoleEngine::~ConsoleEngine() = default;

void ConsoleEngine::interrupt() { sandbox_->interrupt(); }

const std::vector<std::string>& ConsoleEngine::commands() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const CommandHelp& c : kHelp) v.push_back(c.name);
    return v;
  }();
  return names;
}

ConsoleOutput ConsoleEngine::eval(const std::string& code, bool json_mode) {
  std::lock_guard<std::mutex> lk(mu_);
  out_.clear();
  json_ = json_mode;
  printed_ = false;
  watch_ = false;
  ConsoleOutput r;
  // Like the standalone Lua REPL: try the line as an expression first, then as a chunk.
  Status st = sandbox_->load("return " + code, "=console");
  if (!st.ok()) st = sandbox_->load(code, "=console");
  if (st.ok()) {
    const int base = lua_gettop(L_) - 1;
    st = sandbox_->call(0, LUA_MULTRET);
    if (st.ok()) {
      const int n = lua_gettop(L_) - base;
      // Commands print for themselves; show the value of plain expressions.
      if (!printed_ && n > 0) {
        for (int i = 1; i <= n; ++i) {
          out_ += (i > 1 ? "\t" : "");
          out_ += luaL_tolstring(L_, base + i, nullptr);
          lua_pop(L_, 1);
        }
        out_ += "\n";
      }
      lua_settop(L_, base);
    }
  }
  if (!st.ok()) {
    r.ok = false;
    r.error = st.message();
    // On a one-line input the position says nothing the user does not know.
    if (code.find('\n') == std::string::npos && r.error.rfind("console:1: ", 0) == 0) r.error = r.error.substr(11);
  }
  r.text = out_;
  r.watch = watch_;
  return r;
}

std::string ConsoleEngine::watch_frame() {
  std::lock_guard<std::mutex> lk(mu_);
  std::ostringstream o;
  auto clock = d_.step_clock();
  MetricsSnapshot m = d_.metrics();
  o << "janus: " << d_.spec().source << "   step " << (clock.ok() ? clock->step : 0) << (clock.ok() && clock->paused ? " (paused)" : "")
    << "   " << m.completed << " done, " << m.running << " running, " << m.queued << " queued, " << m.failed << " failed   "
    << fmt("%.1f tokens/s", m.tokens_per_s) << "   TPOT p50 " << ms(m.tpot_s.p50) << "\n\n";
  std::string text;
  ConsoleBindings::actors_json(*this, &text);
  o << text;
  if (!m.amax.empty()) {
    o << "\na_max (" << m.policy << "):";
    for (const LayerAmax& l : m.amax) o << "  L" << l.layer << " " << fmt("%.2f", l.mean);
    o << "\n";
  }
  o << "\n(press any key to leave watch)\n";
  return o.str();
}

std::vector<std::string> ConsoleEngine::complete(const std::string& prefix) {
  std::vector<std::string> out;
  // Inside a string argument, complete actor names: kill("exp<TAB>
  const size_t quote = prefix.find_last_of("\"'");
  if (quote != std::string::npos) {
    const std::string stem = prefix.substr(quote + 1);
    for (const std::string& n : d_.actor_names())
      if (n.rfind(stem, 0) == 0) out.push_back(prefix.substr(0, quote + 1) + n);
    return out;
  }
  size_t start = prefix.size();
  while (start > 0 && (std::isalnum(static_cast<unsigned char>(prefix[start - 1])) || prefix[start - 1] == '_')) --start;
  const std::string stem = prefix.substr(start);
  for (const std::string& c : commands())
    if (c.rfind(stem, 0) == 0) out.push_back(prefix.substr(0, start) + c + "(");
  return out;
}

}  // namespace janus
