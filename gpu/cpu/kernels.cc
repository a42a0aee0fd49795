#include "gpu/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "runtime/base/parallel.h"

namespace janus::cpu {
namespace {

// Sixteen independent partial sums let the compiler vectorise without -ffast-math, and
// fix the summation order for a given k, whatever the batch.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  for (int j = 0; i < n; ++i, ++j) acc[j] += a[i] * b[i];
  for (int w = 8; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

// Attention weights in place: scores[t] becomes exp(scores[t] - mx); returns 1 / their sum.
// The paged and the latent (MLA) attention share it, so both normalise in the same order.
inline float exp_weights(float* scores, int32_t len, float mx) {
  float sum = 0.f;
  for (int32_t t = 0; t < len; ++t) {
    scores[t] = std::exp(scores[t] - mx);
    sum += scores[t];
  }
  return 1.0f / sum;
}

// Work below this many multiply-adds runs on the caller: waking the pool costs more.
constexpr int64_t kParallelMacs = 1 << 16;

}  // namespace

void embedding(const int32_t* ids, int64_t n, const void* table, DType dt, int64_t dim, float* out) {
  for (int64_t i = 0; i < n; ++i)
    convert_to_f32(static_cast<const char*>(table) + static_cast<size_t>(ids[i]) * dim * dtype_size(dt), dt, out + i * dim,
                   static_cast<size_t>(dim));
}

void rms_norm(const float* x, int64_t rows, int64_t dim, const void* w, DType wt, float eps, float* y) {
  std::vector<float> wf(static_cast<size_t>(dim));
  convert_to_f32(w, wt, wf.data(), wf.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float ss = dot(xr, xr, dim) / static_cast<float>(dim);
    float inv = 1.0f / std::sqrt(ss + eps);
    for (int64_t i = 0; i < dim; ++i) yr[i] = wf[i] * (xr[i] * inv);
  }
}

void matmul(const float* x, int64_t m, int64_t k, const void* w, DType wt, int64_t n, float* y) {
  const int64_t grain = std::max<int64_t>(1, kParallelMacs / std::max<int64_t>(1, m * k));
  auto body = [&](int64_t n0, int64_t n1) {
    std::vector<float> row;
    if (wt != DType::kF32) row.resize(static_cast<size_t>(k));
    for (int64_t j = n0; j < n1; ++j) {
      const float* wr;
      if (wt == DType::kF32) {
        wr = static_cast<const float*>(w) + j * k;
      } else {
        convert_to_f32(static_cast<const char*>(w) + static_cast<size_t>(j * k) * 2, wt, row.data(), static_cast<size_t>(k));
        wr = row.data();
      }
      for (int64_t i = 0; i < m; ++i) y[i * n + j] = dot(x + i * k, wr, k);
    }
  };
  if (m * k * n < kParallelMacs) body(0, n);
  else parallel_for(n, grain, body);
}

void rope_inv_freq(double theta, int head_dim, float* inv_freq) {
  // transformers: 1.0 / (base ** (torch.arange(0, dim, 2, dtype=float32) / dim)), in fp32.
  const float base = static_cast<float>(theta);
  for (int i = 0; i < head_dim / 2; ++i) {
    float e = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(base, e);
  }
}

void rope_yarn_inv_freq(double theta, int dim, double factor, double original_max_position, double beta_fast,
                        double beta_slow, bool truncate, float* inv_freq) {
  // The dimension whose wavelength makes `rotations` turns over the original context.
  auto correction_dim = [&](double rotations) {
    return dim * std::log(original_max_position / (rotations * 2 * M_PI)) / (2 * std::log(theta));
  };
  double low = correction_dim(beta_fast), high = correction_dim(beta_slow);
  if (truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp
  // torch casts the Python scalars to fp32 before the elementwise ops.
  const float base = static_cast<float>(theta), f = static_cast<float>(factor);
  const float lo = static_cast<float>(low), width = static_cast<float>(high - low);
  for (int i = 0; i < dim / 2; ++i) {
    const float pos_freq = std::pow(base, static_cast<float>(2 * i) / static_cast<float>(dim));
    const float extrapolation = 1.0f / pos_freq, interpolation = 1.0f / (f * pos_freq);
    const float ramp = std::clamp((static_cast<float>(i) - lo) / width, 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    inv_freq[i] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
}

void rope(float* x, int64_t rows, int heads, int head_dim, int rotary_dim, const int32_t* positions, const float* inv_freq,
          float scale) {
  const int half = rotary_dim / 2;
  std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
  for (int64_t r = 0; r < rows; ++r) {
    const float p = static_cast<float>(positions[r]);
    for (int i = 0; i < half; ++i) {
      float angle = p * inv_freq[i];  // fp32 product, as transformers forms freqs
      c[i] = std::cos(angle) * scale;
      s[i] = std::sin(angle) * scale;
    }
    for (int h = 0; h < heads; ++h) {
      float* v = x + (r * heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

namespace {
inline int64_t kv_offset(const PagedKvLayout& L, int32_t seq, int32_t pos) {
  int32_t block = L.block_tables[static_cast<int64_t>(seq) * L.max_blocks + pos / L.block_size];
  return (static_cast<int64_t>(block) * L.block_size + pos % L.block_size) * L.kv_heads * L.head_dim;
}
}  // namespace

void rope_interleaved(float* x, int64_t rows, int heads, int head_dim, const int32_t* positions, const float* inv_freq,
                      float scale) {
  const int half = head_dim / 2;
  std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
  for (int64_t r = 0; r < rows; ++r) {
    const float p = static_cast<float>(positions[r]);
    for (int i = 0; i < half; ++i) {
      const float angle = p * inv_freq[i];
      c[i] = std::cos(angle) * scale;
      s[i] = std::sin(angle) * scale;
    }
    for (int h = 0; h < heads; ++h) {
      float* v = x + (r * heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * c[i] - b * s[i];
        v[2 * i + 1] = a * s[i] + b * c[i];
      }
    }
  }
}

void kv_write(const float* k, const float* v, int64_t rows, const KvRow* row, const PagedKvLayout& L, float* k_cache,
              float* v_cache) {
  const int64_t width = static_cast<int64_t>(L.kv_heads) * L.head_dim;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off = kv_offset(L, row[r].seq, row[r].pos);
    std::memcpy(k_cache + off, k + r * width, static_cast<size_t>(width) * 4);
    std::memcpy(v_cache + off, v + r * width, static_cast<size_t>(width) * 4);
  }
}

void kv_write_keys(const float* entry, int64_t rows, const KvRow* row, const PagedKvLayout& L, float* cache) {
  const int64_t width = static_cast<int64_t>(L.kv_heads) * L.head_dim;
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(cache + kv_offset(L, row[r].seq, row[r].pos), entry + r * width, static_cast<size_t>(width) * 4);
}

void latent_attention(const float* q_lat, const float* q_pe, int64_t rows, const KvRow* row, int heads, int lora, int rope,
                      const PagedKvLayout& L, const float* cache, float scale, float* out_lat) {
  auto body = [&](int64_t r0, int64_t r1) {
    std::vector<float> scores;
    for (int64_t r = r0; r < r1; ++r) {
      const int32_t len = row[r].pos + 1;
      scores.resize(static_cast<size_t>(len));
      for (int h = 0; h < heads; ++h) {
        const float* ql = q_lat + (r * heads + h) * lora;
        const float* qp = q_pe + (r * heads + h) * rope;
        float mx = -INFINITY;
        for (int32_t t = 0; t < len; ++t) {
          const float* e = cache + kv_offset(L, row[r].seq, t);
          scores[t] = (dot(ql, e, lora) + dot(qp, e + lora, rope)) * scale;
          mx = std::max(mx, scores[t]);
        }
        const float inv = exp_weights(scores.data(), len, mx);
        float* o = out_lat + (r * heads + h) * lora;
        std::fill(o, o + lora, 0.f);
        for (int32_t t = 0; t < len; ++t) {
          const float p = scores[t] * inv;
          const float* e = cache + kv_offset(L, row[r].seq, t);
          for (int d = 0; d < lora; ++d) o[d] += p * e[d];
        }
      }
    }
  };
  int64_t work = 0;
  for (int64_t r = 0; r < rows; ++r) work += static_cast<int64_t>(row[r].pos + 1) * heads * (2 * lora + rope);
  if (work < kParallelMacs) body(0, rows);
  else parallel_for(rows, 1, body);
}

void paged_attention(const float* q, int64_t rows, const KvRow* row, int heads, const PagedKvLayout& L, const float* k_cache,
                     const float* v_cache, int window, float scale, float* out) {
  const int hd = L.head_dim;
  const int group = heads / L.kv_heads;
  int64_t work = 0;
  for (int64_t r = 0; r < rows; ++r) work += static_cast<int64_t>(row[r].pos + 1) * heads * hd * 2;
  auto body = [&](int64_t r0, int64_t r1) {
    std::vector<float> scores;
    for (int64_t r = r0; r < r1; ++r) {
      const int32_t pos = row[r].pos;
      const int32_t first = window > 0 ? std::max(0, pos - window + 1) : 0;
      const int32_t len = pos - first + 1;
      scores.resize(static_cast<size_t>(len));
      for (int h = 0; h < heads; ++h) {
        const int kvh = h / group;
        const float* qh = q + (r * heads + h) * hd;
        float mx = -INFINITY;
        for (int32_t t = 0; t < len; ++t) {
          const float* kt = k_cache + kv_offset(L, row[r].seq, first + t) + kvh * hd;
          scores[t] = dot(qh, kt, hd) * scale;
          mx = std::max(mx, scores[t]);
        }
        const float inv = exp_weights(scores.data(), len, mx);
        float* oh = out + (r * heads + h) * hd;
        std::fill(oh, oh + hd, 0.f);
        for (int32_t t = 0; t < len; ++t) {
          const float p = scores[t] * inv;
          const float* vt = v_cache + kv_offset(L, row[r].seq, first + t) + kvh * hd;
          for (int d = 0; d < hd; ++d) oh[d] += p * vt[d];
        }
      }
    }
  };
  if (work < kParallelMacs) body(0, rows);
  else parallel_for(rows, 1, body);
}

void gate_topk(const float* logits, int64_t rows, int experts, int top_k, bool renormalize, int32_t* ids, float* weights) {
  std::vector<float> p(static_cast<size_t>(experts));
  std::vector<int32_t> order(static_cast<size_t>(experts));
  for (int64_t r = 0; r < rows; ++r) {
    const float* l = logits + r * experts;
    float mx = *std::max_element(l, l + experts);
    float sum = 0.f;
    for (int e = 0; e < experts; ++e) {
      p[e] = std::exp(l[e] - mx);
      sum += p[e];
    }
    for (int e = 0; e < experts; ++e) p[e] /= sum;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                      [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    float ksum = 0.f;
    for (int j = 0; j < top_k; ++j) ksum += p[order[j]];
    for (int j = 0; j < top_k; ++j) {
      ids[r * top_k + j] = order[j];
      weights[r * top_k + j] = renormalize ? p[order[j]] / ksum : p[order[j]];
    }
  }
}

void gate_topk_grouped(const float* logits, int64_t rows, int experts, int top_k, int n_group, int topk_group, float scale,
                       int32_t* ids, float* weights) {
  std::vector<float> p(static_cast<size_t>(experts)), gscore(static_cast<size_t>(n_group));
  std::vector<int32_t> order(static_cast<size_t>(experts)), gorder(static_cast<size_t>(n_group));
  const int per = experts / n_group;
  for (int64_t r = 0; r < rows; ++r) {
    const float* l = logits + r * experts;
    const float mx = *std::max_element(l, l + experts);
    float sum = 0.f;
    for (int e = 0; e < experts; ++e) {
      p[e] = std::exp(l[e] - mx);
      sum += p[e];
    }
    for (int e = 0; e < experts; ++e) p[e] /= sum;
    for (int g = 0; g < n_group; ++g) gscore[g] = *std::max_element(p.begin() + g * per, p.begin() + (g + 1) * per);
    std::iota(gorder.begin(), gorder.end(), 0);
    std::partial_sort(gorder.begin(), gorder.begin() + topk_group, gorder.end(),
                      [&](int32_t a, int32_t b) { return gscore[a] > gscore[b] || (gscore[a] == gscore[b] && a < b); });
    // Experts of the dropped groups score 0, as transformers masks them.
    std::vector<bool> keep(static_cast<size_t>(n_group), false);
    for (int g = 0; g < topk_group; ++g) keep[gorder[g]] = true;
    for (int e = 0; e < experts; ++e)
      if (!keep[e / per]) p[e] = 0.f;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                      [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    for (int j = 0; j < top_k; ++j) {
      ids[r * top_k + j] = order[j];
      weights[r * top_k + j] = p[order[j]] * scale;
    }
  }
}

void gate_topk_sigmoid_grouped(const float* logits, const float* bias, int64_t rows, int experts, int top_k, int n_group,
                               int topk_group, bool renormalize, float scale, int32_t* ids, float* weights) {
  std::vector<float> score(static_cast<size_t>(experts)), choice(static_cast<size_t>(experts)),
      gscore(static_cast<size_t>(n_group));
  std::vector<int32_t> order(static_cast<size_t>(experts)), gorder(static_cast<size_t>(n_group));
  const int per = experts / n_group;
  for (int64_t r = 0; r < rows; ++r) {
    const float* l = logits + r * experts;
    for (int e = 0; e < experts; ++e) {
      score[e] = 1.0f / (1.0f + std::exp(-l[e]));
      choice[e] = score[e] + bias[e];
    }
    for (int g = 0; g < n_group; ++g) {
      const float* c = choice.data() + g * per;
      float a = -INFINITY, b = -INFINITY;  // the group's best two
      for (int i = 0; i < per; ++i) {
        if (c[i] > a) {
          b = a;
          a = c[i];
        } else if (c[i] > b) {
          b = c[i];
        }
      }
      gscore[g] = a + b;
    }
    std::iota(gorder.begin(), gorder.end(), 0);
    std::partial_sort(gorder.begin(), gorder.begin() + topk_group, gorder.end(),
                      [&](int32_t a, int32_t b) { return gscore[a] > gscore[b] || (gscore[a] == gscore[b] && a < b); });
    // Experts of the dropped groups can never be chosen (transformers masks them to -inf).
    std::vector<bool> keep(static_cast<size_t>(n_group), false);
    for (int g = 0; g < topk_group; ++g) keep[gorder[g]] = true;
    for (int e = 0; e < experts; ++e)
      if (!keep[e / per]) choice[e] = -INFINITY;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                      [&](int32_t a, int32_t b) { return choice[a] > choice[b] || (choice[a] == choice[b] && a < b); });
    float sum = 0.f;
    for (int j = 0; j < top_k; ++j) sum += score[order[j]];
    const float denom = sum + 1e-20f;
    for (int j = 0; j < top_k; ++j) {
      ids[r * top_k + j] = order[j];
      const float w = renormalize ? score[order[j]] / denom : score[order[j]];
      weights[r * top_k + j] = w * scale;
    }
  }
}

void silu_mul(const float* x, const float* u, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    float g = x[i];
    y[i] = g / (1.0f + std::exp(-g)) * u[i];
  }
}

void swiglu_ffn(const float* x, int64_t rows, int64_t hidden, int64_t inter, const void* gate, DType gt, const void* up,
                DType ut, const void* down, DType dt, float* scratch, float* y) {
  float* g = scratch;
  float* u = scratch + rows * inter;
  matmul(x, rows, hidden, gate, gt, inter, g);
  matmul(x, rows, hidden, up, ut, inter, u);
  silu_mul(g, u, rows * inter, g);
  matmul(g, rows, inter, down, dt, hidden, y);
}

}  // namespace janus::cpu
