#include "actors/bridge_staging.h"

#include <cstring>
#include <utility>

#include "gpu/backend/backend.h"

namespace janus::actors {

namespace {

using transport::PoolBlock;

// Sections start on 8-byte boundaries, so F64 sums and int32 routing read aligned.
size_t align8(size_t x) { return (x + 7) & ~size_t{7}; }

// dst += src over n elements, in the partial sums' own type (F64 on the CPU backends).
void add_into(char* dst, const char* src, size_t n, DType dt) {
  if (dt == DType::kF64) {
    auto* d = reinterpret_cast<double*>(dst);
    const auto* s = reinterpret_cast<const double*>(src);
    for (size_t i = 0; i < n; ++i) d[i] += s[i];
  } else {
    auto* d = reinterpret_cast<float*>(dst);
    const auto* s = reinterpret_cast<const float*>(src);
    for (size_t i = 0; i < n; ++i) d[i] += s[i];
  }
}

}  // namespace

const ExchangePart* Contribution::part(int32_t shard) const {
  for (const ExchangePart& p : parts)
    if (p.shard == shard) return &p;
  return nullptr;
}

Tensor payload_view(const std::shared_ptr<void>& hold, const char* base, const PayloadSection& s, DType dt, int64_t rows,
                    int64_t cols) {
  Tensor t;
  t.dtype = dt;
  t.rows = rows;
  t.cols = cols;
  t.data = const_cast<char*>(base + s.offset);
  t.storage = hold;
  return t;
}

Result<Contribution> BridgeStaging::pack(const std::vector<const ShardActivations*>& shards) {
  Contribution c;
  std::vector<Tensor> host(shards.size());
  uint64_t total = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    const ShardActivations& a = *shards[i];
    if (a.h.rows > 0) JANUS_TRY(copy_to_host(a.h, &host[i]));
    ExchangePart p;
    p.shard = a.shard;
    p.rows = static_cast<uint32_t>(a.h.rows);
    p.dtype = a.h.rows > 0 ? host[i].dtype : DType::kF32;
    p.has_h = a.h.rows > 0;
    if (p.has_h) {
      p.h = {total, host[i].bytes()};
      total += align8(p.h.bytes);
    }
    if (!a.topk_ids.empty()) {
      p.topk_ids = {total, a.topk_ids.size() * 4};
      total += align8(p.topk_ids.bytes);
      p.topk_weights = {total, a.topk_weights.size() * 4};
      total += align8(p.topk_weights.bytes);
    }
    c.parts.push_back(p);
  }
  c.bytes = total;
  if (total == 0) return c;
  JANUS_ASSIGN_OR_RETURN(PoolBlock b, pool_.acquire(total));
  for (size_t i = 0; i < shards.size(); ++i) {
    const ExchangePart& p = c.parts[i];
    if (p.has_h) std::memcpy(b.data + p.h.offset, host[i].data, p.h.bytes);
    if (p.topk_ids.bytes) {
      std::memcpy(b.data + p.topk_ids.offset, shards[i]->topk_ids.data(), p.topk_ids.bytes);
      std::memcpy(b.data + p.topk_weights.offset, shards[i]->topk_weights.data(), p.topk_weights.bytes);
    }
  }
  c.hold = pool_.hold(b);
  c.base = b.data;
  return c;
}

Contribution BridgeStaging::reduce(const std::map<int32_t, MoeResult>& results, const std::vector<int32_t>& shards, uint64_t moe_ns) {
  Contribution c;
  c.moe_ns = moe_ns;
  for (const auto& [s, r] : results)
    if (!r.error.ok()) {
      c.error = r.error.message();
      return c;
    }
  std::vector<std::vector<Tensor>> host;
  for (int32_t s : shards) {
    const MoeResult& r = results.at(s);
    std::vector<Tensor> hs;
    ExchangePart p;
    p.shard = s;
    p.dtype = DType::kF64;
    for (const Tensor& t : r.partials) {
      if (t.rows == 0) continue;
      Tensor h;
      Status st = copy_to_host(t, &h);
      if (!st.ok()) {
        c.error = st.message();
        return c;
      }
      hs.push_back(h);
    }
    if (!hs.empty()) {
      p.has_h = true;
      p.rows = static_cast<uint32_t>(hs[0].rows);
      p.dtype = hs[0].dtype;
      p.h = {c.bytes, hs[0].bytes()};
      c.bytes += align8(p.h.bytes);
    }
    c.parts.push_back(p);
    host.push_back(std::move(hs));
  }
  if (c.bytes == 0) return c;
  auto b = pool_.acquire(c.bytes);
  if (!b.ok()) {
    c.error = b.status().message();
    return c;
  }
  for (size_t i = 0; i < c.parts.size(); ++i) {
    const ExchangePart& p = c.parts[i];
    if (!p.has_h) continue;
    char* dst = b->data + p.h.offset;
    std::memcpy(dst, host[i][0].data, p.h.bytes);
    for (size_t j = 1; j < host[i].size(); ++j) add_into(dst, static_cast<const char*>(host[i][j].data), p.h.bytes / dtype_size(p.dtype), p.dtype);
  }
  c.hold = pool_.hold(*b);
  c.base = b->data;
  return c;
}

void BridgeStaging::sum_nodes(const std::map<uint32_t, Contribution>& by_node, const std::vector<int32_t>& shards,
                              const std::vector<uint32_t>& moe_nodes, Contribution* out) {
  // Per shard: the MoE nodes' sections that carry rows, in node order.
  std::vector<std::vector<std::pair<const Contribution*, const ExchangePart*>>> terms;
  for (int32_t s : shards) {
    ExchangePart p;
    p.shard = s;
    p.dtype = DType::kF64;
    std::vector<std::pair<const Contribution*, const ExchangePart*>> t;
    for (uint32_t m : moe_nodes) {
      const ExchangePart* q = by_node.at(m).part(s);
      if (q != nullptr && q->has_h) t.push_back({&by_node.at(m), q});
    }
    if (!t.empty()) {
      p.has_h = true;
      p.rows = t[0].second->rows;
      p.dtype = t[0].second->dtype;
      p.h = {out->bytes, t[0].second->h.bytes};
      out->bytes += align8(p.h.bytes);
    }
    out->parts.push_back(p);
    terms.push_back(std::move(t));
  }
  if (out->bytes == 0) return;
  auto b = pool_.acquire(out->bytes);
  if (!b.ok()) {
    out->error = b.status().message();
    return;
  }
  for (size_t i = 0; i < out->parts.size(); ++i) {
    const ExchangePart& p = out->parts[i];
    if (!p.has_h) continue;
    char* dst = b->data + p.h.offset;
    std::memcpy(dst, terms[i][0].first->base + terms[i][0].second->h.offset, p.h.bytes);
    for (size_t j = 1; j < terms[i].size(); ++j) {
      if (terms[i][j].second->dtype != p.dtype || terms[i][j].second->h.bytes != p.h.bytes) {
        out->error = "MoE nodes sent partial sums of different shapes for shard " + std::to_string(p.shard);
        break;
      }
      add_into(dst, terms[i][j].first->base + terms[i][j].second->h.offset, p.h.bytes / dtype_size(p.dtype), p.dtype);
    }
  }
  out->hold = pool_.hold(*b);
  out->base = b->data;
}

Result<Contribution> BridgeStaging::stage(int32_t shard, const Tensor& rows) {
  Tensor h;
  JANUS_TRY(copy_to_host(rows, &h));
  JANUS_ASSIGN_OR_RETURN(PoolBlock b, pool_.acquire(h.bytes()));
  std::memcpy(b.data, h.data, h.bytes());
  ExchangePart p;
  p.shard = shard;
  p.rows = static_cast<uint32_t>(h.rows);
  p.dtype = h.dtype;
  p.has_h = true;
  p.h = {0, h.bytes()};
  Contribution c;
  c.parts = {p};
  c.hold = pool_.hold(b);
  c.base = b.data;
  c.bytes = h.bytes();
  return c;
}

}  // namespace janus::actors
