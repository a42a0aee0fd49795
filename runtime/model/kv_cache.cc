#include "runtime/model/kv_cache.h"

#include <algorithm>

namespace janus {

PagedKvCache::PagedKvCache(const KvCacheShape& shape) : shape_(shape) {
  max_blocks_ = blocks_for(shape.max_seq_len);
  block_tables_.assign(static_cast<size_t>(shape.max_seqs) * max_blocks_, -1);
  blocks_held_.assign(static_cast<size_t>(shape.max_seqs), 0);
  in_use_.assign(static_cast<size_t>(shape.max_seqs), false);
  // Stacks popped from the back: hand out low block and row numbers first.
  for (int b = shape.num_blocks - 1; b >= 0; --b) free_.push_back(b);
  for (int s = shape.max_seqs - 1; s >= 0; --s) free_seqs_.push_back(s);
  if (shape.allocate_storage) {
    const size_t n = layer_stride() * static_cast<size_t>(shape.layers);
    k_.assign(n, 0.f);
    if (shape.values) v_.assign(n, 0.f);
  }
}

bool PagedKvCache::can_admit(int tokens) const {
  return !free_seqs_.empty() && tokens <= shape_.max_seq_len && blocks_for(tokens) <= free_blocks();
}

Result<int> PagedKvCache::add_sequence() {
  if (free_seqs_.empty())
    return resource_exhausted("KV cache: all " + std::to_string(shape_.max_seqs) + " sequence slots are in use");
  int s = free_seqs_.back();
  free_seqs_.pop_back();
  in_use_[static_cast<size_t>(s)] = true;
  return s;
}

Status PagedKvCache::reserve(int seq, int tokens) {
  if (seq < 0 || seq >= shape_.max_seqs || !in_use_[static_cast<size_t>(seq)])
    return internal_error("KV cache: sequence " + std::to_string(seq) + " is not allocated");
  if (tokens > shape_.max_seq_len)
    return resource_exhausted("KV cache: " + std::to_string(tokens) + " positions exceed the per-sequence limit of " +
                              std::to_string(shape_.max_seq_len));
  int want = blocks_for(tokens);
  int& held = blocks_held_[static_cast<size_t>(seq)];
  if (want - held > free_blocks())
    return resource_exhausted("KV cache: need " + std::to_string(want - held) + " more blocks, " +
                              std::to_string(free_blocks()) + " free");
  for (; held < want; ++held) {
    block_tables_[static_cast<size_t>(seq) * max_blocks_ + held] = free_.back();
    free_.pop_back();
  }
  return Status::Ok();
}

void PagedKvCache::release(int seq) {
  if (seq < 0 || seq >= shape_.max_seqs || !in_use_[static_cast<size_t>(seq)]) return;
  int& held = blocks_held_[static_cast<size_t>(seq)];
  for (int i = held - 1; i >= 0; --i) {
    int32_t& b = block_tables_[static_cast<size_t>(seq) * max_blocks_ + i];
    free_.push_back(b);
    b = -1;
  }
  held = 0;
  in_use_[static_cast<size_t>(seq)] = false;
  free_seqs_.push_back(seq);
}

int PagedKvCache::reserved_tokens(int seq) const { return blocks_held_[static_cast<size_t>(seq)] * shape_.block_size; }

cpu::PagedKvLayout PagedKvCache::layout() const {
  cpu::PagedKvLayout L;
  L.block_size = shape_.block_size;
  L.kv_heads = shape_.kv_heads;
  L.head_dim = shape_.head_dim;
  L.block_tables = block_tables_.data();
  L.max_blocks = max_blocks_;
  return L;
}

}  // namespace janus
