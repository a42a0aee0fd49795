// Graph configs are Lua 5.4 files. A config calls a small declarative API —
//
//   model{path=DIR} or model{preset="tiny-qwen3-moe", seed=0, dtype="f32"}
//   attention{shards=N, devices={"cpu", ...} or "cpu", micro_batches=M, max_batch=B,
//             kv_blocks=K, block_size=16, max_seq_len=L, nodes={"a1", "a1", "a2"} or "a1"}
//   experts{instances=N, slots=C, devices=..., placement="auto" or {{0,1,2},{3,4,5},...},
//           nodes={"m1", ...} or "m1"}
//   router{side="moe" | "attention"}
//   scheduler{policy="aebs" | "random_replica" | "primary" | "token_balanced", seed=S}
//   scaler{recover=true,   -- replace dead members (else requests fail with the error)
//          policy="none" | "slo", profile="profile.json", tpot_slo_ms=100, interval_s=5,
//          context=512, min_attention=1, max_attention=4, min_moe=1, max_moe=8,
//          shrink_after=3}  -- grow at once, shrink after 3 decisions in a row ask for less
//            -- "slo": Janus Algorithm 2 every interval on the measured demand
//   workload{prompts={{5,17,99},...}, max_new_tokens=N, temperature=T, top_p=P, top_k=K,
//            seed=S, ignore_eos=false,
//            -- generated load for `janus bench-serve`:
//            arrivals="poisson"|"gamma"|"trace", rate=R or {{t, R}, ...} (a ramp),
//            shape=K (gamma), requests=N, trace="file.csv", time_scale=F,
//            prompt_len=16 or {dist="lognormal"|"uniform"|"sharegpt_prompt", mean=, sigma=,
//            min=, max=}, output_len=..., slo={ttft_ms=X, tpot_ms=Y}}
//   nodes{{name="a1", host="127.0.0.1"}, {name="m1", host="10.0.0.2"}, ...}
//            -- a multi-node deployment: `janus node --join HOST:PORT --name a1` processes
//   coordinator{listen="127.0.0.1:0", secret="...", tls=false, cert=, key=, ca=,
//               join_timeout_s=60, port_file=}   -- where nodes join (the secret or $JANUS_SECRET)
//   exchange{mode="auto" | "single" | "case1" | "case2", transport="auto" | "tcp" | "shm" | "verbs",
//            spin_us=1000, probe=true}   -- how layer batches move between nodes
//   at(seconds, kill "expert-2") / at(t, slow("expert-1", 50)) / at(t, scale{attention=2, moe=6})
//            -- a scenario replayed by `janus bench-serve`
//
// — and, being Lua, may compute any of it with loops and functions. Expert ids are the
// model's (0-based). Every section is optional (defaults as in GraphSpec). Mistakes are
// reported with the file and line of the call: an unknown key, a value of the wrong type,
// a section given twice, a Lua syntax or runtime error.
#pragma once

#include <string>

#include "runtime/config/graph_spec.h"
#include "runtime/base/status.h"

namespace janus {

/// Runs the config file and returns the graph it declares (not yet resolved against a model).
Result<GraphSpec> load_lua_config(const std::string& path);

/// The same for config text; `chunkname` names it in error messages.
Result<GraphSpec> load_lua_config_string(const std::string& code, const std::string& chunkname);

}  // namespace janus
