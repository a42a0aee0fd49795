#include "transport/cost_model.h"

#include <algorithm>
#include <cstdio>
#include <set>

namespace janus::transport {

const char* exchange_mode_name(ExchangeMode m) {
  switch (m) {
    case ExchangeMode::kSingle: return "single";
    case ExchangeMode::kCase1: return "case1";
    case ExchangeMode::kCase2: return "case2";
  }
  return "?";
}

Result<ExchangeMode> parse_exchange_mode(const std::string& name) {
  if (name == "single") return ExchangeMode::kSingle;
  if (name == "case1") return ExchangeMode::kCase1;
  if (name == "case2") return ExchangeMode::kCase2;
  return invalid_argument("unknown exchange mode '" + name + "' (single, case1, case2)");
}

Result<LinkFit> fit_link(uint32_t from, uint32_t to, const std::vector<double>& bytes, const std::vector<double>& half_rtt,
                         int burst, double burst_s) {
  if (bytes.size() != half_rtt.size() || bytes.size() < 2)
    return invalid_argument("fit_link: need two or more (bytes, seconds) samples");
  const double n = static_cast<double>(bytes.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    sx += bytes[i];
    sy += half_rtt[i];
    sxx += bytes[i] * bytes[i];
    sxy += bytes[i] * half_rtt[i];
  }
  const double den = n * sxx - sx * sx;
  if (den <= 0) return invalid_argument("fit_link: the samples need two distinct sizes");
  double slope = (n * sxy - sx * sy) / den;
  double intercept = (sy - slope * sx) / n;
  // Noise can tilt a fit on a fast link: keep both terms physical. The smallest message's
  // half round trip is a direct measurement of the fixed cost, and a few noisy repeats at
  // the largest size must not lift the intercept above it (on veth links that made the
  // latency 5x too large and flipped the Case 1 / Case 2 choice from run to run): then
  // the fixed cost is that measurement and the slope is refitted through it.
  const size_t at_smallest = static_cast<size_t>(std::min_element(half_rtt.begin(), half_rtt.end()) - half_rtt.begin());
  const double smallest = half_rtt[at_smallest];
  if (intercept <= 0 || intercept > smallest) {
    intercept = smallest;
    double num = 0, sq = 0;
    for (size_t i = 0; i < bytes.size(); ++i) {
      const double x = bytes[i] - bytes[at_smallest];
      num += x * (half_rtt[i] - smallest);
      sq += x * x;
    }
    if (sq > 0) slope = num / sq;
  }
  if (slope <= 0) slope = 1e-12;
  LinkFit f;
  f.from = from;
  f.to = to;
  f.bytes_per_s = 1.0 / slope;
  f.rtt_small_s = 2 * smallest;
  f.samples = static_cast<int>(bytes.size());
  // A burst of k messages answered one by one takes about 2c + (k - 1) o.
  if (burst > 1 && burst_s > 0) f.per_message_s = std::max(0.0, (burst_s - 2 * intercept) / static_cast<double>(burst - 1));
  f.per_message_s = std::min(f.per_message_s, intercept);
  f.latency_s = intercept - f.per_message_s;
  return f;
}

void CostModel::add(const LinkFit& f) { links_[{f.from, f.to}] = f; }

const std::vector<LinkFit> CostModel::links() const {
  std::vector<LinkFit> out;
  for (const auto& [k, f] : links_) out.push_back(f);
  return out;
}

LinkFit CostModel::link(uint32_t from, uint32_t to) const {
  auto it = links_.find({from, to});
  if (it != links_.end()) return it->second;
  it = links_.find({to, from});  // probes measure both directions at once
  if (it != links_.end()) {
    LinkFit f = it->second;
    std::swap(f.from, f.to);
    return f;
  }
  LinkFit f;
  f.from = from;
  f.to = to;
  if (links_.empty()) {  // loopback TCP as measured on the development machine (docs/dependencies.md §3.3)
    f.latency_s = 8e-6;
    f.per_message_s = 2e-6;
    f.bytes_per_s = 2e9;
    return f;
  }
  for (const auto& [k, g] : links_) {  // the slowest probed link: a pessimistic stand-in
    f.latency_s = std::max(f.latency_s, g.latency_s);
    f.per_message_s = std::max(f.per_message_s, g.per_message_s);
    f.bytes_per_s = f.bytes_per_s == 0 ? g.bytes_per_s : std::min(f.bytes_per_s, g.bytes_per_s);
  }
  return f;
}

double CostModel::phase_time(const std::vector<Transfer>& transfers) const {
  double latency = 0;
  std::map<uint32_t, double> out, in;
  for (const Transfer& t : transfers) {
    if (t.messages == 0) continue;
    const LinkFit f = link(t.from, t.to);
    latency = std::max(latency, f.latency_s);
    const double busy = static_cast<double>(t.messages) * f.per_message_s + static_cast<double>(t.bytes) / f.bytes_per_s;
    out[t.from] += busy;
    in[t.to] += busy;
  }
  double nic = 0;
  if (full_duplex_) {
    for (const auto& [n, s] : out) nic = std::max(nic, s);
    for (const auto& [n, s] : in) nic = std::max(nic, s);
  } else {
    for (auto& [n, s] : in) out[n] += s;
    for (const auto& [n, s] : out) nic = std::max(nic, s);
  }
  return latency + nic;
}

std::vector<std::vector<Transfer>> CostModel::phases(ExchangeMode mode, const ExchangeTopology& t, const ExchangeLoad& l) const {
  std::vector<std::vector<Transfer>> out;
  const size_t na = t.attention_nodes.size(), nm = t.moe_nodes.size();
  auto rows_of = [&](size_t k) {
    int64_t r = 0;
    if (k < l.rows.size())
      for (int64_t x : l.rows[k]) r += x;
    return static_cast<uint64_t>(r);
  };
  auto shards_of = [&](size_t k) { return static_cast<uint64_t>(k < t.shards.size() ? t.shards[k] : 1); };
  auto inst_of = [&](size_t j) { return static_cast<uint64_t>(j < t.instances.size() ? t.instances[j] : 1); };
  std::vector<Transfer> fwd, rev;
  switch (mode) {
    case ExchangeMode::kSingle:
      // Every shard's rows to every instance, every instance's partial sums to every shard.
      for (size_t k = 0; k < na; ++k)
        for (size_t j = 0; j < nm; ++j) {
          const uint64_t copies = inst_of(j);
          fwd.push_back({t.attention_nodes[k], t.moe_nodes[j], shards_of(k) * copies, rows_of(k) * l.forward_bytes_per_row * copies});
          rev.push_back({t.moe_nodes[j], t.attention_nodes[k], shards_of(k) * copies, rows_of(k) * l.reverse_bytes_per_row * copies});
        }
      out.push_back(fwd);
      out.push_back(rev);
      break;
    case ExchangeMode::kCase1:
      for (size_t k = 0; k < na; ++k)
        for (size_t j = 0; j < nm; ++j) {
          fwd.push_back({t.attention_nodes[k], t.moe_nodes[j], 1, rows_of(k) * l.forward_bytes_per_row});
          rev.push_back({t.moe_nodes[j], t.attention_nodes[k], 1, rows_of(k) * l.reverse_bytes_per_row});
        }
      out.push_back(fwd);
      out.push_back(rev);
      break;
    case ExchangeMode::kCase2: {
      std::vector<Transfer> relay, gather;
      for (size_t k = 0; k < na; ++k) {
        const uint32_t d = t.designated(k);
        fwd.push_back({t.attention_nodes[k], d, 1, rows_of(k) * l.forward_bytes_per_row});
        for (size_t j = 0; j < nm; ++j) {
          if (t.moe_nodes[j] == d) continue;
          relay.push_back({d, t.moe_nodes[j], 1, rows_of(k) * l.forward_bytes_per_row});
          gather.push_back({t.moe_nodes[j], d, 1, rows_of(k) * l.reverse_bytes_per_row});
        }
        rev.push_back({d, t.attention_nodes[k], 1, rows_of(k) * l.reverse_bytes_per_row});
      }
      out.push_back(fwd);
      if (!relay.empty()) out.push_back(relay);
      if (!gather.empty()) out.push_back(gather);
      out.push_back(rev);
      break;
    }
  }
  return out;
}

double CostModel::predict(ExchangeMode mode, const ExchangeTopology& t, const ExchangeLoad& l) const {
  double s = 0;
  for (const auto& p : phases(mode, t, l)) s += phase_time(p);
  return s;
}

ExchangeMode CostModel::choose(const ExchangeTopology& t, const ExchangeLoad& l) const {
  return predict(ExchangeMode::kCase2, t, l) < predict(ExchangeMode::kCase1, t, l) ? ExchangeMode::kCase2 : ExchangeMode::kCase1;
}

std::string CostModel::to_string(const std::vector<std::string>& names) const {
  auto name = [&](uint32_t i) { return i < names.size() ? names[i] : "node" + std::to_string(i); };
  std::string out;
  char line[256];
  for (const auto& [k, f] : links_) {
    std::snprintf(line, sizeof line, "%s -> %s: a %.1f us, o %.2f us, b %.2f GB/s (round trip %.1f us)\n", name(f.from).c_str(),
                  name(f.to).c_str(), f.latency_s * 1e6, f.per_message_s * 1e6, f.bytes_per_s / 1e9, f.rtt_small_s * 1e6);
    out += line;
  }
  return out;
}

}  // namespace janus::transport
