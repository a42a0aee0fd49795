-- A deployment that keeps decoding for a while, for console tests.
model{preset = "tiny-qwen3-moe"}
attention{shards = 2, micro_batches = 2}
experts{instances = 3, slots = 12}
scheduler{policy = "aebs"}
local prompts = {}
for i = 1, 6 do prompts[i] = {i, 2 * i, 3 * i} end
workload{prompts = prompts, max_new_tokens = 3000, ignore_eos = true}
