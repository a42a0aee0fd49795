-- A MegaScale-Infer-like deployment: the gate on the attention side (AGate), only routed
-- rows travel, random replica choice (EPLB-like), a two-micro-batch ping-pong pipeline.
-- Loops work: this config builds its placement and workload in Lua.

model{preset = "tiny-qwen3-moe"}

local shards, instances, slots = 3, 4, 9
attention{shards = shards, micro_batches = 2, max_batch = 32, kv_blocks = 256}

-- 32 experts: expert e on instance e % 4, then experts 0..3 replicated once more.
local placement = {}
for i = 1, instances do placement[i] = {} end
for e = 0, 31 do table.insert(placement[e % instances + 1], e) end
for e = 0, 3 do table.insert(placement[(e + 1) % instances + 1], e) end
experts{instances = instances, slots = slots, placement = placement}

router{side = "attention"}
scheduler{policy = "random_replica", seed = 7}

local prompts = {}
for i = 1, 6 do
  local p = {}
  for t = 1, i * 2 do p[t] = (i * 37 + t * 11) % 512 end
  prompts[i] = p
end
workload{prompts = prompts, max_new_tokens = 12}
