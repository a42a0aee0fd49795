-- The default tiny deployment spread over four `janus node` processes on this machine:
-- two attention nodes (one shard each) and two MoE nodes (two expert instances each).
--
--   JANUS_SECRET=s3cret build/janus run examples/configs/nodes/loopback.lua &
--   for n in a1 a2 m1 m2; do JANUS_SECRET=s3cret build/janus node --join 127.0.0.1:7411 --name $n & done
model{preset="tiny-qwen3-moe"}
nodes{
  {name="a1", host="127.0.0.1"}, {name="a2", host="127.0.0.1"},
  {name="m1", host="127.0.0.1"}, {name="m2", host="127.0.0.1"},
}
coordinator{listen="127.0.0.1:7411"}   -- the secret: coordinator{secret=...} or $JANUS_SECRET
exchange{mode="auto"}                  -- Case 1 or Case 2 per layer batch, by the cost model
attention{shards=2, micro_batches=1, nodes={"a1", "a2"}}
experts{instances=4, slots=10, nodes={"m1", "m1", "m2", "m2"}}
router{side="moe"}
scheduler{policy="aebs"}
workload{prompts={{5, 17, 99}, {42, 7, 300, 11, 256, 8}, {100}, {9, 8, 7, 6, 5, 4, 3, 2}}, max_new_tokens=24}
