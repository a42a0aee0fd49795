// A paged KV cache: fixed-size blocks of token positions handed to sequences on demand,
// as vLLM pages its cache. A sequence holds one row of the block table; its logical
// block i lives in physical block block_table[seq][i]. Running out of blocks is a
// refusal the caller can wait on (admission control), never a crash or an eviction.
#pragma once

#include <cstdint>
#include <vector>

#include "gpu/cpu/kernels.h"
#include "runtime/base/status.h"

namespace janus {

struct KvCacheShape {
  int layers = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;
  int num_blocks = 0;   // physical blocks shared by all sequences
  int max_seqs = 0;     // rows of the block table
  int max_seq_len = 0;  // longest sequence a row can hold
  bool allocate_storage = true;  // false: bookkeeping only (the K/V live elsewhere, e.g. on a GPU)
  bool values = true;            // false: one cache per layer, no V (MLA keeps its latent in k())
};

class PagedKvCache {
 public:
  explicit PagedKvCache(const KvCacheShape& shape);

  const KvCacheShape& shape() const { return shape_; }
  int blocks_for(int tokens) const { return (tokens + shape_.block_size - 1) / shape_.block_size; }
  int free_blocks() const { return static_cast<int>(free_.size()); }
  int free_seqs() const { return static_cast<int>(free_seqs_.size()); }

  /// Whether a new sequence of `tokens` positions would fit now.
  bool can_admit(int tokens) const;
  /// Takes a block-table row for a new sequence; resource_exhausted when none is free.
  Result<int> add_sequence();
  /// Makes positions [0, tokens) of `seq` backed by blocks; resource_exhausted (and no
  /// change) when not enough blocks are free.
  Status reserve(int seq, int tokens);
  /// Returns the sequence's blocks and its row.
  void release(int seq);
  int reserved_tokens(int seq) const;

  cpu::PagedKvLayout layout() const;
  float* k(int layer) { return k_.data() + layer_stride() * layer; }
  float* v(int layer) { return v_.empty() ? nullptr : v_.data() + layer_stride() * layer; }
  const float* k(int layer) const { return k_.data() + layer_stride() * layer; }
  const float* v(int layer) const { return v_.empty() ? nullptr : v_.data() + layer_stride() * layer; }

 private:
  size_t layer_stride() const {
    return static_cast<size_t>(shape_.num_blocks) * shape_.block_size * shape_.kv_heads * shape_.head_dim;
  }

  KvCacheShape shape_;
  int max_blocks_ = 0;
  std::vector<int32_t> block_tables_;  // [max_seqs, max_blocks], -1 = none
  std::vector<int> blocks_held_;       // per seq
  std::vector<bool> in_use_;
  std::vector<int32_t> free_;          // physical blocks, used as a stack
  std::vector<int> free_seqs_;
  std::vector<float> k_, v_;
};

}  // namespace janus
