// Shared by the benchmark programs: timing, a copy-bandwidth probe, table printing.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace janus::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

/// Host memory copy bandwidth in bytes/s (bytes read + bytes written), on buffers well
/// beyond the caches.
inline double host_copy_bandwidth() {
  const size_t n = 256u << 20;
  std::vector<char> a(n, 1), b(n, 2);
  std::vector<double> t;
  for (int i = 0; i < 5; ++i) {
    double t0 = now_s();
    std::memcpy(b.data(), a.data(), n);
    t.push_back(now_s() - t0);
    a[static_cast<size_t>(i)] = b[static_cast<size_t>(i) + 1];  // keep the copies observable
  }
  return 2.0 * static_cast<double>(n) / median(t);
}

/// Runs a command and returns its stdout (empty when it fails).
inline std::string capture(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "";
  std::string out;
  char buf[4096];
  size_t k;
  while ((k = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, k);
  return pclose(p) == 0 ? out : "";
}

}  // namespace janus::bench
