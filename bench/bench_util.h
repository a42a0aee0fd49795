// Shared by the benchmark programs: timing, a copy-bandwidth probe, table printing.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
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

/// Single-core fp32 multiply-add peak in flop/s for the instruction set this binary is
/// built for (16-byte vectors: the x86-64 baseline), times the cores given.
inline double host_peak_flops(int cores) {
  typedef float v4 __attribute__((vector_size(16)));
  v4 acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = v4{1.f + i, 1.f, 1.f, 1.f};
  const v4 a = {0.999999f, 0.999999f, 0.999999f, 0.999999f}, b = {1e-7f, 1e-7f, 1e-7f, 1e-7f};
  const long iters = 20000000;
  double t0 = now_s();
  for (long it = 0; it < iters; ++it)
    for (int i = 0; i < 8; ++i) acc[i] = acc[i] * a + b;
  double t = now_s() - t0;
  float sink = 0;
  for (int i = 0; i < 8; ++i) sink += acc[i][0];
  if (sink == 12345.f) std::printf(" ");  // keep the loop
  return cores * (iters * 8.0 * 4 * 2) / t;
}

/// The source tree (for bench/peers/*.py): $JANUS_SOURCE_DIR when set (a build run on
/// another machine, e.g. the GPU host), else the tree this binary was built from.
inline std::string source_dir() {
  if (const char* e = std::getenv("JANUS_SOURCE_DIR"); e && *e) return e;
#ifdef JANUS_SOURCE_DIR
  return JANUS_SOURCE_DIR;
#else
  return ".";
#endif
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
