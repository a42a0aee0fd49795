-- DeepSeek-V2 served in virtual time (`janus simulate`) under a load that rises, falls
-- and rises again (two "days" compressed into 20 minutes), with the SLO autoscaler
-- choosing n_a and n_e every 30 s (Algorithm 2) and re-placing experts from the live
-- activation window. Coefficients: one DeepSeek-V2-sized layer profiled on our H100.
simulate{profile = "../../profiles/h100-dsv2-slice.json", shape = "deepseek-v2"}
attention{shards = 1, max_batch = 1024}
experts{instances = 6}
scaler{policy = "slo", profile = "../../profiles/h100-dsv2-slice.json", tpot_slo_ms = 150, interval_s = 30,
       context = 272, min_attention = 1, max_attention = 16, min_moe = 6, max_moe = 48}
workload{arrivals = "poisson", rate = {{0, 2}, {300, 45}, {600, 10}, {900, 55}, {1200, 3}}, requests = 100000,
         prompt_len = 16, output_len = {dist = "lognormal", mean = 256, sigma = 0.5, max = 1024},
         slo = {tpot_ms = 150, ttft_ms = 3000}}
