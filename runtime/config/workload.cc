#include "runtime/config/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

namespace janus {
namespace {

// ShareGPT-like lengths as lognormal fits of the conversation dataset's token counts
// (prompts: median ~ 70 tokens with a long tail; outputs: median ~ 200).
constexpr double kShareGptPromptMean = 160, kShareGptPromptSigma = 1.2;
constexpr double kShareGptOutputMean = 300, kShareGptOutputSigma = 0.9;

Result<int> draw_length(const LengthDist& d, std::mt19937_64& rng, const char* what) {
  double v = 0;
  auto lognormal = [&](double mean, double sigma) {
    // Mean of a lognormal is exp(mu + sigma^2 / 2): choose mu so the mean is right.
    std::lognormal_distribution<double> ln(std::log(mean) - sigma * sigma / 2, sigma);
    return ln(rng);
  };
  if (d.kind == "fixed") v = d.mean;
  else if (d.kind == "uniform") {
    if (d.max < d.min) return invalid_argument(std::string(what) + ": uniform needs min <= max");
    v = std::uniform_real_distribution<double>(d.min, d.max + 1)(rng);
  } else if (d.kind == "lognormal") {
    if (d.mean <= 0 || d.sigma <= 0) return invalid_argument(std::string(what) + ": lognormal needs mean > 0 and sigma > 0");
    v = lognormal(d.mean, d.sigma);
  } else if (d.kind == "sharegpt_prompt") v = lognormal(kShareGptPromptMean, kShareGptPromptSigma);
  else if (d.kind == "sharegpt_output") v = lognormal(kShareGptOutputMean, kShareGptOutputSigma);
  else
    return invalid_argument(std::string(what) + ": unknown length distribution '" + d.kind +
                            "' (fixed, uniform, lognormal, sharegpt_prompt, sharegpt_output)");
  if (d.max > 0) v = std::min(v, d.max);
  return std::max(1, static_cast<int>(std::floor(v)));
}

}  // namespace

Result<std::vector<TraceRow>> read_trace_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) return not_found(path + ": cannot read the trace");
  std::vector<TraceRow> rows;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    std::replace(line.begin(), line.end(), ',', ' ');
    std::istringstream ls(line);
    TraceRow r{};
    if (!(ls >> r.at_s >> r.prompt_tokens >> r.output_tokens)) {
      if (n == 1) continue;  // a header
      return invalid_argument(path + ":" + std::to_string(n) + ": expected 'arrival_s, prompt_tokens, output_tokens'");
    }
    if (r.at_s < 0 || r.prompt_tokens < 1 || r.output_tokens < 0)
      return invalid_argument(path + ":" + std::to_string(n) + ": negative time or length");
    rows.push_back(r);
  }
  std::stable_sort(rows.begin(), rows.end(), [](const TraceRow& a, const TraceRow& b) { return a.at_s < b.at_s; });
  return rows;
}

Result<std::vector<PlannedRequest>> plan_workload(const ArrivalSpec& s, int vocab, int max_len) {
  if (max_len < 2) return invalid_argument("workload: the maximum sequence length must be at least 2");
  const bool fixed_prompt = s.prompt.kind == "fixed", fixed_output = s.output.kind == "fixed";
  if (s.kind != "trace" && fixed_prompt && s.prompt.mean > max_len - 1)
    return invalid_argument("workload: a prompt of " + std::to_string(static_cast<int64_t>(s.prompt.mean)) +
                            " tokens does not fit max_seq_len " + std::to_string(max_len) +
                            " (attention{max_seq_len}); the longest prompt it takes is " + std::to_string(max_len - 1));
  if (s.kind != "trace" && fixed_prompt && fixed_output && s.prompt.mean + s.output.mean > max_len)
    return invalid_argument("workload: prompt " + std::to_string(static_cast<int64_t>(s.prompt.mean)) + " + output " +
                            std::to_string(static_cast<int64_t>(s.output.mean)) + " tokens exceed max_seq_len " +
                            std::to_string(max_len) + " (attention{max_seq_len})");
  std::mt19937_64 rng(s.seed);
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  std::vector<PlannedRequest> out;
  auto make = [&](double at, int plen, int olen) {
    PlannedRequest r;
    r.at_s = at;
    const int p = std::clamp(plen, 1, max_len - 1);
    const int o = std::clamp(olen, 0, max_len - p);
    r.clamped = p != plen || o != olen;
    plen = p;
    olen = o;
    for (int i = 0; i < plen; ++i) r.prompt.push_back(token(rng));
    r.max_new_tokens = olen;
    out.push_back(std::move(r));
  };
  if (s.kind == "trace") {
    JANUS_ASSIGN_OR_RETURN(auto rows, read_trace_csv(s.trace));
    if (!(s.time_scale > 0)) return invalid_argument("workload: time_scale must be positive");
    for (const TraceRow& r : rows) make(r.at_s * s.time_scale, r.prompt_tokens, r.output_tokens);
    return out;
  }
  if (s.kind != "poisson" && s.kind != "gamma" && s.kind != "all")
    return invalid_argument("workload: unknown arrivals '" + s.kind + "' (all, poisson, gamma, trace)");
  if (s.requests < 0) return invalid_argument("workload: requests must not be negative");
  if (s.kind != "all" && !(s.rate > 0)) return invalid_argument("workload: rate must be positive");
  if (s.kind == "gamma" && !(s.shape > 0)) return invalid_argument("workload: gamma shape must be positive");
  if (!s.rate_points.empty()) {
    if (s.kind != "poisson") return invalid_argument("workload: a rate ramp needs poisson arrivals");
    double peak = 0;
    for (size_t i = 0; i < s.rate_points.size(); ++i) {
      if (s.rate_points[i].second < 0 || (i > 0 && s.rate_points[i].first <= s.rate_points[i - 1].first))
        return invalid_argument("workload: rate points must have increasing times and non-negative rates");
      peak = std::max(peak, s.rate_points[i].second);
    }
    if (!(peak > 0)) return invalid_argument("workload: the rate ramp never rises above 0");
    auto rate_at = [&](double t) {
      const auto& p = s.rate_points;
      if (t <= p.front().first) return p.front().second;
      for (size_t i = 1; i < p.size(); ++i)
        if (t <= p[i].first) {
          const double f = (t - p[i - 1].first) / (p[i].first - p[i - 1].first);
          return p[i - 1].second + f * (p[i].second - p[i - 1].second);
        }
      return 0.0;
    };
    // Thinning (Lewis-Shedler): candidates at the peak rate, each kept with rate(t)/peak.
    std::exponential_distribution<double> gap(peak);
    std::uniform_real_distribution<double> u(0, 1);
    const double end = s.rate_points.back().first;
    for (double t = gap(rng); t < end && static_cast<int>(out.size()) < s.requests; t += gap(rng)) {
      if (u(rng) * peak > rate_at(t)) continue;
      JANUS_ASSIGN_OR_RETURN(int plen, draw_length(s.prompt, rng, "prompt lengths"));
      JANUS_ASSIGN_OR_RETURN(int olen, draw_length(s.output, rng, "output lengths"));
      make(t, plen, olen);
    }
    return out;
  }
  double t = 0;
  std::exponential_distribution<double> expo(s.kind == "all" ? 1.0 : s.rate);
  // Gamma gaps with shape k and mean 1/rate: scale 1/(k rate).
  std::gamma_distribution<double> gam(s.shape, s.kind == "gamma" ? 1.0 / (s.shape * s.rate) : 1.0);
  for (int i = 0; i < s.requests; ++i) {
    JANUS_ASSIGN_OR_RETURN(int plen, draw_length(s.prompt, rng, "prompt lengths"));
    JANUS_ASSIGN_OR_RETURN(int olen, draw_length(s.output, rng, "output lengths"));
    make(t, plen, olen);
    if (s.kind == "poisson") t += expo(rng);
    else if (s.kind == "gamma") t += gam(rng);
  }
  return out;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double idx = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(idx)), hi = static_cast<size_t>(std::ceil(idx));
  return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

}  // namespace janus
