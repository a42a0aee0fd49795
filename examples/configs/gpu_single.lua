-- The 8-layer GPU preset on one GPU, disaggregated inside it: one attention shard and one
-- expert instance holding all 128 experts, each its own actor on its own CUDA stream.
model{preset = "gpu-qwen3-moe"}
attention{shards = 1, devices = "cuda:0", max_batch = 64, kv_blocks = 4096}
experts{instances = 1, slots = 128, devices = "cuda:0"}
router{side = "moe"}
scheduler{policy = "aebs"}
workload{prompts = {{5, 17, 99, 1000, 31999}}, max_new_tokens = 16}
