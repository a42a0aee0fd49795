#include "runtime/scheduling/kv_admission.h"

#include <cstddef>

namespace janus {

int kv_blocks_needed(int prompt_tokens, int max_new_tokens, int block_size) {
  const int len = prompt_tokens + max_new_tokens;
  return (len + block_size - 1) / block_size;
}

int pick_shard(const std::vector<ShardOccupancy>& shards, int blocks, int kv_blocks, int max_seqs) {
  int best = -1, best_free = -1;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const int free_blocks = kv_blocks - shards[i].blocks;
    if (shards[i].seqs >= max_seqs || free_blocks < blocks) continue;
    if (free_blocks > best_free) {
      best = static_cast<int>(i);
      best_free = free_blocks;
    }
  }
  return best;
}

}  // namespace janus
