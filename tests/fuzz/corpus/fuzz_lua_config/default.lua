-- The default deployment of `janus run`: the tiny Qwen3-MoE on the CPU, disaggregated.
-- Two attention shards each split their batch into two micro-batches (a ping-pong
-- pipeline); four expert instances with 10 slots each hold the 32 experts plus 8 spare
-- replicas; the gate runs on the MoE side (EGate) and AEBS balances activated experts.

model{preset = "tiny-qwen3-moe"}

attention{shards = 2, devices = "cpu", micro_batches = 2}

experts{instances = 4, slots = 10, devices = "cpu", placement = "auto"}

router{side = "moe"}

scheduler{policy = "aebs"}

workload{
  prompts = {{5, 17, 99}, {42, 7, 300, 11, 256, 8}, {100}, {9, 8, 7, 6, 5, 4, 3, 2}},
  max_new_tokens = 24,
}
