#include "runtime/base/progress.h"

#include <unistd.h>

#include <cstdio>

namespace janus {

std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1e9) std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  else if (b >= 1e6) std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
  else if (b >= 1e3) std::snprintf(buf, sizeof buf, "%.1f kB", b / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f B", b);
  return buf;
}

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), tty_(isatty(STDERR_FILENO) != 0) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(int64_t done) {
  done_ = done;
  auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (now - last_draw_ < std::chrono::milliseconds(100) && done_ < total_) return;
    last_draw_ = now;
    draw(false);
  } else {
    int decile = total_ > 0 ? static_cast<int>(10 * done_ / total_) : 10;
    if (decile == last_decile_ || decile >= 10) return;
    last_decile_ = decile;
    draw(false);
  }
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  done_ = total_;
  draw(true);
}

void ProgressBar::draw(bool final) {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  const int width = 30;
  int filled = static_cast<int>(frac * width);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, ' ');
  std::string amount, rate;
  if (unit_ == "B") {
    amount = human_bytes(static_cast<double>(done_)) + "/" + human_bytes(static_cast<double>(total_));
    if (secs > 0) rate = human_bytes(static_cast<double>(done_) / secs) + "/s";
  } else {
    amount = std::to_string(done_) + "/" + std::to_string(total_) + " " + unit_;
    if (secs > 0) {
      char b[32];
      std::snprintf(b, sizeof b, "%.1f %s/s", static_cast<double>(done_) / secs, unit_.c_str());
      rate = b;
    }
  }
  char eta[32] = "";
  if (!final && frac > 0.01 && frac < 1.0) std::snprintf(eta, sizeof eta, " ETA %.0fs", secs * (1 - frac) / frac);
  std::fprintf(stderr, "%s%s [%s] %3.0f%% %s %s%s%s", tty_ ? "\r" : "", label_.c_str(), bar.c_str(), frac * 100,
               amount.c_str(), rate.c_str(), eta, tty_ ? (final ? "\033[K\n" : "\033[K") : "\n");
  std::fflush(stderr);
}

}  // namespace janus
