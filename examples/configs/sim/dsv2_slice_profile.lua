-- Profiles one DeepSeek-V2-sized MoE layer on one GPU (`janus profile` on this config):
-- the coefficients `janus simulate` scales to the whole model for the paper's Fig. 9 study.
-- The committed result is examples/profiles/h100-dsv2-slice.json.
model{preset = "dsv2-slice"}
attention{shards = 1, devices = "cuda:0", max_batch = 64, kv_blocks = 8192, max_seq_len = 2048}
experts{instances = 1, slots = 32, devices = "cuda:0"}
router{side = "moe"}
scheduler{policy = "aebs"}
