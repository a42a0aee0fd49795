// Paged KV cache on the GPU: writing a batch's keys and values, and causal attention of
// a ragged batch of query rows over it (decode: one row per sequence; prefill: many rows
// of one sequence, each attending to its own prefix). Same layout as the CPU twins
// cpu::kv_write and cpu::paged_attention: k and v caches [num_blocks, block_size,
// kv_heads, head_dim], block tables [num_seqs, max_blocks], one cpu::KvRow (seq, pos) per
// query row; grouped-query heads; optional sliding window. All pointers, including
// layout.block_tables, are device memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "gpu/cpu/kernels.h"
#include "runtime/base/dtype.h"
#include "runtime/base/status.h"

namespace janus::cuda {

/// Stores k, v [rows, kv_heads, head_dim] (F32 or BF16) at each row's (seq, pos) slot of
/// caches of `cache_dtype` (F32 or BF16).
Status kv_write(const void* k, const void* v, DType src_dtype, int64_t rows, const cpu::KvRow* row,
                const cpu::PagedKvLayout& layout, void* k_cache, void* v_cache, DType cache_dtype, cudaStream_t stream);

struct PagedAttentionArgs {
  const void* q = nullptr;  // [rows, heads, head_dim]
  DType q_dtype = DType::kF32;
  int64_t rows = 0;
  const cpu::KvRow* row = nullptr;  // [rows]
  int heads = 0;
  cpu::PagedKvLayout layout;
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  DType kv_dtype = DType::kBF16;
  int sliding_window = 0;  // 0: attend to the whole prefix
  float scale = 0.f;       // usually 1 / sqrt(head_dim)
  void* out = nullptr;     // [rows, heads, head_dim]
  DType out_dtype = DType::kF32;
  // An upper bound of pos + 1 over the rows (the cache capacity will do). It sizes the
  // split of long contexts over several blocks (flash-decoding); 0: no split.
  int max_context = 0;
  // Partial results of split contexts; see paged_attention_workspace_bytes. With less
  // than that, contexts are split less (down to not at all).
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

/// Workspace for the split plan paged_attention() picks for these sizes on this device.
size_t paged_attention_workspace_bytes(int64_t rows, int heads, int kv_heads, int head_dim, int max_context);

/// Causal attention of each row over positions [max(0, pos - window + 1), pos] of its
/// sequence; softmax in fp32. BF16 caches with head_dim 64 or 128 and at most 16 query
/// heads per kv head run on tensor cores (q and the probabilities rounded to BF16);
/// everything else runs the exact fp32 fallback.
Status paged_attention(const PagedAttentionArgs& a, cudaStream_t stream);

/// Whether paged_attention() takes the tensor-core path for these arguments.
bool paged_attention_uses_tensor_cores(const PagedAttentionArgs& a);

}  // namespace janus::cuda
