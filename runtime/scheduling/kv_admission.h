// The Frontend's admission rule, shared by the Frontend actor and `janus simulate`.
//
// A request is admitted whole: it reserves the KV blocks of its prompt plus all its new
// tokens, so a running request never runs out of cache and nothing is ever evicted. It goes
// to the shard with the most free blocks that can hold it and has a free sequence slot
// (ties: the lower index). Requests are taken first come, first served; one that fits
// nowhere waits, and nothing behind it overtakes it.
#pragma once

#include <vector>

namespace janus {

/// KV blocks and sequence slots taken on one attention shard.
struct ShardOccupancy {
  int blocks = 0;
  int seqs = 0;
};

/// Blocks a request of `prompt_tokens` + `max_new_tokens` reserves.
int kv_blocks_needed(int prompt_tokens, int max_new_tokens, int block_size);

/// The shard that takes a request needing `blocks`, or -1 when none can now.
int pick_shard(const std::vector<ShardOccupancy>& shards, int blocks, int kv_blocks, int max_seqs);

}  // namespace janus
