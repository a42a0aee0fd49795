// The attention side of a layer on an attention shard: the embedding, then per layer the
// input norm, QKV projections, q/k norm and RoPE, the KV write into the paged cache, paged
// attention, the o-projection into the residual and the post-attention norm.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "gpu/backend/cuda/ops.h"
#include "gpu/cuda/attention.h"
#include "gpu/cuda/embedding.h"
#include "gpu/cuda/norm_rope.h"

namespace janus::cuda {
namespace {

void* cache_at(const AttentionState& shard, const std::shared_ptr<void>& cache, int layer) {
  return static_cast<char*>(cache.get()) + shard.layer_elems * static_cast<size_t>(layer) * dtype_size(shard.kv_dtype);
}

// The block table lives on the host (PagedKvCache, bookkeeping only) and is mirrored on
// the device. The shard changes it between steps (admission, release); before each call
// the entries this call's rows use are compared with the mirror (a few ints per row) and
// the whole table is uploaded when any differs.
Status sync_block_table(AttentionState& shard, const std::vector<cpu::KvRow>& rows, int* max_context) {
  const KvCacheShape& s = shard.kv.shape();
  const cpu::PagedKvLayout L = shard.kv.layout();
  const int mb = L.max_blocks;
  bool dirty = false;
  int mc = 0;
  for (const cpu::KvRow& r : rows) {
    if (r.seq < 0 || r.seq >= s.max_seqs || r.pos < 0 || r.pos >= mb * s.block_size)
      return invalid_argument("attention: KV row (seq " + std::to_string(r.seq) + ", pos " + std::to_string(r.pos) +
                              ") is outside the cache (" + std::to_string(s.max_seqs) + " sequences of " +
                              std::to_string(mb * s.block_size) + " positions)");
    const int used = r.pos / s.block_size + 1;
    const int32_t* host = L.block_tables + static_cast<size_t>(r.seq) * mb;
    if (host[used - 1] < 0)
      return internal_error("attention: position " + std::to_string(r.pos) + " of KV sequence " + std::to_string(r.seq) +
                            " has no block reserved");
    if (!dirty && std::memcmp(host, shard.shadow.data() + static_cast<size_t>(r.seq) * mb, static_cast<size_t>(used) * 4) != 0)
      dirty = true;
    mc = std::max(mc, r.pos + 1);
  }
  if (dirty) {
    std::memcpy(shard.shadow.data(), L.block_tables, shard.table_elems * 4);
    JANUS_TRY(shard.engine.upload_to(shard.tables.get(), shard.shadow.data(), shard.table_elems * 4));
  }
  *max_context = mc;
  return Status::Ok();
}

// The (seq, pos) rows of a micro-batch are the same for every layer of a step: they are
// uploaded once and found again by content (a few recent sets, for micro-batches).
Result<const cpu::KvRow*> device_rows(AttentionState& shard, const std::vector<cpu::KvRow>& rows) {
  ++shard.tick;
  const size_t bytes = rows.size() * sizeof(cpu::KvRow);
  for (KvRowsEntry& e : shard.rows_cache)
    if (e.dev && e.rows.size() == rows.size() && std::memcmp(e.rows.data(), rows.data(), bytes) == 0) {
      e.used = shard.tick;
      return static_cast<const cpu::KvRow*>(e.dev.get());
    }
  KvRowsEntry* victim = &shard.rows_cache[0];
  for (KvRowsEntry& e : shard.rows_cache)
    if (e.used < victim->used) victim = &e;
  if (victim->capacity < bytes) {
    shard.engine.hold(victim->dev);  // queued layers may still read the old rows
    JANUS_ASSIGN_OR_RETURN(victim->dev, shard.engine.pool->alloc(bytes));
    victim->capacity = DevicePool::size_class(bytes);
  }
  victim->rows = rows;
  victim->used = shard.tick;
  JANUS_TRY(shard.engine.upload_to(victim->dev.get(), rows.data(), bytes));
  return static_cast<const cpu::KvRow*>(victim->dev.get());
}

}  // namespace

Status embed_tokens(AttentionState& shard, const std::vector<int32_t>& tokens, Tensor* x) {
  const ModelConfig& c = shard.model->config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      return invalid_argument("embed: token " + std::to_string(tokens[i]) + " (position " + std::to_string(i) +
                              ") is outside the vocabulary of " + std::to_string(c.vocab_size));
  JANUS_ASSIGN_OR_RETURN(Tensor out, shard.engine.tensor(kF32, n, c.hidden_size));
  if (n > 0) {
    JANUS_ASSIGN_OR_RETURN(void* ids, shard.engine.upload(tokens.data(), tokens.size() * 4));
    JANUS_TRY(embedding(static_cast<const int32_t*>(ids), n, shard.embed->data, shard.embed->dtype, c.vocab_size, c.hidden_size,
                        out.data, kF32, shard.engine.stream));
  }
  JANUS_TRY(shard.engine.finish({&out}));
  *x = std::move(out);
  return Status::Ok();
}

Status run_attention(AttentionState& shard, int layer, Tensor& x, const std::vector<cpu::KvRow>& rows, Tensor* h) {
  const ModelConfig& c = shard.model->config();
  JANUS_TRY(check_layer(shard, layer, "attention"));
  JANUS_TRY(check_residual(shard, x, "attention"));
  if (static_cast<size_t>(x.rows) != rows.size())
    return invalid_argument("attention: " + std::to_string(x.rows) + " activation rows but " + std::to_string(rows.size()) +
                            " KV rows");
  const int64_t n = x.rows, H = c.hidden_size, QD = c.q_dim(), KD = c.kv_dim();
  const float eps = static_cast<float>(c.rms_norm_eps);
  const AttentionLayer& w = shard.layers[static_cast<size_t>(layer)];
  JANUS_ASSIGN_OR_RETURN(Tensor out, shard.engine.tensor(kF32, n, H));
  if (n == 0) {
    *h = std::move(out);
    return Status::Ok();
  }
  int max_context = 0;
  JANUS_TRY(sync_block_table(shard, rows, &max_context));
  JANUS_ASSIGN_OR_RETURN(const cpu::KvRow* d_rows, device_rows(shard, rows));

  JANUS_ASSIGN_OR_RETURN(void* hn, shard.engine.scratch(static_cast<size_t>(n * H) * dtype_size(shard.adt)));
  JANUS_TRY(rms_norm(x.data, kF32, n, H, w.input_norm->data, w.input_norm->dtype, eps, hn, shard.adt, shard.engine.stream));
  JANUS_ASSIGN_OR_RETURN(void* qkv, shard.engine.scratch(static_cast<size_t>(n * (QD + 2 * KD)) * 4));
  float* q = static_cast<float*>(qkv);
  float* k = q + n * QD;
  float* v = k + n * KD;
  JANUS_TRY(shard.engine.linear(hn, shard.adt, n, H, *w.q, q, kF32, false));
  JANUS_TRY(shard.engine.linear(hn, shard.adt, n, H, *w.k, k, kF32, false));
  JANUS_TRY(shard.engine.linear(hn, shard.adt, n, H, *w.v, v, kF32, false));
  JANUS_TRY(qk_norm_rope(q, k, kF32, n, c.num_heads, c.num_kv_heads, c.head_dim, c.qk_norm ? w.q_norm->data : nullptr,
                         c.qk_norm ? w.k_norm->data : nullptr, c.qk_norm ? w.q_norm->dtype : kF32, eps, d_rows,
                         static_cast<const float*>(shard.inv_freq.get()), shard.engine.stream));
  cpu::PagedKvLayout L = shard.kv.layout();
  L.block_tables = static_cast<const int32_t*>(shard.tables.get());
  void* kc = cache_at(shard, shard.k_cache, layer);
  void* vc = cache_at(shard, shard.v_cache, layer);
  JANUS_TRY(kv_write(k, v, kF32, n, d_rows, L, kc, vc, shard.kv_dtype, shard.engine.stream));
  JANUS_ASSIGN_OR_RETURN(void* a, shard.engine.scratch(static_cast<size_t>(n * QD) * dtype_size(shard.adt)));
  PagedAttentionArgs pa;
  pa.q = q;
  pa.q_dtype = kF32;
  pa.rows = n;
  pa.row = d_rows;
  pa.heads = c.num_heads;
  pa.layout = L;
  pa.k_cache = kc;
  pa.v_cache = vc;
  pa.kv_dtype = shard.kv_dtype;
  pa.sliding_window = c.sliding_window;
  pa.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  pa.out = a;
  pa.out_dtype = shard.adt;
  pa.max_context = max_context;
  pa.workspace_bytes = paged_attention_workspace_bytes(n, c.num_heads, c.num_kv_heads, c.head_dim, max_context);
  if (pa.workspace_bytes > 0) {
    JANUS_ASSIGN_OR_RETURN(pa.workspace, shard.engine.scratch(pa.workspace_bytes));
  }
  JANUS_TRY(paged_attention(pa, shard.engine.stream));
  // x += o(a), then h = post_norm(x).
  JANUS_TRY(shard.engine.linear(a, shard.adt, n, QD, *w.o, x.data, kF32, true));
  JANUS_TRY(rms_norm(x.data, kF32, n, H, w.post_norm->data, w.post_norm->dtype, eps, out.data, kF32, shard.engine.stream));
  shard.engine.touch(x);
  JANUS_TRY(shard.engine.finish({&out, &x}));
  *h = std::move(out);
  return Status::Ok();
}

}  // namespace janus::cuda
