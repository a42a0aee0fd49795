// One-line logging to stderr for events an operator should see (dropped frames, dead
// actors, refused requests). JANUS_LOG=error|warn|info|debug sets the level (default warn).
#pragma once

#include <string>

namespace janus {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

bool log_enabled(LogLevel level);
void log_message(LogLevel level, const std::string& who, const std::string& message);

inline void log_warn(const std::string& who, const std::string& m) { log_message(LogLevel::kWarn, who, m); }
inline void log_info(const std::string& who, const std::string& m) { log_message(LogLevel::kInfo, who, m); }
inline void log_error(const std::string& who, const std::string& m) { log_message(LogLevel::kError, who, m); }

}  // namespace janus
