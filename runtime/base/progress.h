// A progress line on stderr for long work (model making and loading, benchmarks):
// redrawn in place on a terminal, a line per tenth otherwise so logs stay short.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace janus {

class ProgressBar {
 public:
  /// `unit` is "B" (shown as MB/GB, with a rate) or a noun such as "tokens".
  ProgressBar(std::string label, int64_t total, std::string unit);
  ~ProgressBar();

  void update(int64_t done);
  void finish();

 private:
  void draw(bool final);

  std::string label_, unit_;
  int64_t total_ = 0, done_ = 0;
  int last_decile_ = -1;
  bool tty_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

/// "1.23 GB", "456.0 MB", "12.0 kB" (powers of 1000)
std::string human_bytes(double bytes);

}  // namespace janus
