#include "runtime/base/log.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace janus {
namespace {

LogLevel level_from_env() {
  const char* v = std::getenv("JANUS_LOG");
  if (v == nullptr) return LogLevel::kWarn;
  if (std::strcmp(v, "error") == 0) return LogLevel::kError;
  if (std::strcmp(v, "info") == 0) return LogLevel::kInfo;
  if (std::strcmp(v, "debug") == 0) return LogLevel::kDebug;
  return LogLevel::kWarn;
}

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::kError: return "error";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kInfo: return "info";
    case LogLevel::kDebug: return "debug";
  }
  return "?";
}

}  // namespace

bool log_enabled(LogLevel level) {
  static const LogLevel threshold = level_from_env();
  return static_cast<int>(level) <= static_cast<int>(threshold);
}

void log_message(LogLevel level, const std::string& who, const std::string& message) {
  if (!log_enabled(level)) return;
  static std::mutex mu;
  static const auto start = std::chrono::steady_clock::now();
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::lock_guard<std::mutex> lk(mu);
  std::fprintf(stderr, "[%9.3f] %-5s %s: %s\n", t, level_name(level), who.c_str(), message.c_str());
}

}  // namespace janus
