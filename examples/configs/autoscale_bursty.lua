-- The SLO autoscaler on a live deployment (`janus bench-serve`): the tiny Qwen3-MoE on the
-- CPU under bursty arrivals (Gamma gaps, CV^2 = 4, as BurstGPT fits) and a load ramp.
-- Every second the Scaler measures the demand, runs Algorithm 2 on the profiled model and
-- rescales (new shards and instances ready before the switch, requests of retiring shards
-- resumed elsewhere). Make the profile first, on this machine:
--   janus profile examples/configs/default.lua --out profile-cpu.json
-- A scripted fault is replayed on the way: expert-1 is killed 4 s in.
model{preset = "tiny-qwen3-moe"}
attention{shards = 1, max_batch = 32}
experts{instances = 4, slots = 10}
router{side = "moe"}
scheduler{policy = "aebs"}
scaler{policy = "slo", profile = "../../profile-cpu.json", tpot_slo_ms = 3, interval_s = 1, context = 96,
       min_attention = 1, max_attention = 4, min_moe = 4, max_moe = 6}
workload{arrivals = "gamma", rate = 30, shape = 0.25, requests = 300, seed = 3,
         prompt_len = {dist = "sharegpt_prompt", max = 64}, output_len = {dist = "lognormal", mean = 48, sigma = 0.6, max = 128},
         slo = {ttft_ms = 1000, tpot_ms = 10}}
at(4, kill "expert-1")
