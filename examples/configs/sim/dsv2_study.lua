-- The paper's Fig. 9 per-GPU throughput study, in virtual time (`janus simulate --study`):
-- DeepSeek-V2, 16-in/256-out requests, batches 64/256/512, TPOT SLOs 150 and 200 ms (the
-- paper's) and two tighter ones where the systems part ways; Janus against a
-- MegaScale-Infer-like and a monolithic (SGLang-like) deployment, up to 64 H100s.
-- Coefficients: one DeepSeek-V2-sized layer profiled on our H100 (dsv2_slice_profile.lua).
simulate{profile = "../../profiles/h100-dsv2-slice.json", shape = "deepseek-v2",
         study_batches = {64, 256, 512}, study_slos_ms = {60, 90, 150, 200}, max_devices = 64}
