// Helpers shared by the unit tests: scratch directories, files, fixture paths.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace janus::test {

/// A fresh directory under /tmp, removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "janus-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }

 private:
  std::string path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A shell command's exit code (-1: it did not exit normally) and what it wrote to stdout.
struct ShellRun {
  int code = -1;
  std::string out;
};

/// Runs `cmd` with /bin/sh and waits for it to end; nullopt when it could not be started.
inline std::optional<ShellRun> run_shell(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  ShellRun r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

/// Copies every file of a directory (not recursive) into another.
inline void copy_dir(const std::string& from, const std::string& to) {
  std::filesystem::create_directories(to);
  for (const auto& e : std::filesystem::directory_iterator(from))
    if (e.is_regular_file()) std::filesystem::copy_file(e.path(), std::filesystem::path(to) / e.path().filename());
}

/// The source tree: $JANUS_SOURCE_DIR when set (tests run on another machine, e.g. the
/// GPU host), else the tree the tests were built from.
inline std::string source_dir() {
  const char* e = std::getenv("JANUS_SOURCE_DIR");
  return e && *e ? std::string(e) : std::string(JANUS_SOURCE_DIR);
}

/// Source-tree path of a committed fixture, e.g. fixture("qwen3_moe").
inline std::string fixture(const std::string& name) { return source_dir() + "/tests/fixtures/" + name; }

/// Fresh random floats in [-1, 1) (never zeros: zeros hide unwritten outputs).
inline std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

/// One row of a SwiGLU FFN in double precision, the formula the kernels are held to:
/// y[h] = sum_i down[h, i] * silu(gate[i] . x) * (up[i] . x), with gate and up [inter, hidden]
/// and down [hidden, inter].
inline std::vector<double> swiglu_row_f64(const float* x, const float* gate, const float* up, const float* down, int hidden,
                                          int inter) {
  std::vector<double> a(static_cast<size_t>(inter));
  for (int i = 0; i < inter; ++i) {
    double gs = 0, us = 0;
    for (int h = 0; h < hidden; ++h) {
      gs += static_cast<double>(gate[i * hidden + h]) * x[h];
      us += static_cast<double>(up[i * hidden + h]) * x[h];
    }
    a[i] = gs / (1 + std::exp(-gs)) * us;
  }
  std::vector<double> y(static_cast<size_t>(hidden), 0.0);
  for (int h = 0; h < hidden; ++h)
    for (int i = 0; i < inter; ++i) y[h] += static_cast<double>(down[h * inter + i]) * a[i];
  return y;
}

/// max |a - b| / max |b|: the relative error in max-norm.
inline double rel_max_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num = std::max(num, std::abs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return den > 0 ? num / den : num;
}

}  // namespace janus::test
