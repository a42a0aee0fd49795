#include <cstdio>

#include "runtime/cli/commands.h"

namespace janus::cli {

int fail(const std::string& command, const std::string& message, int code) {
  std::fprintf(stderr, "janus %s: %s\n", command.c_str(), message.c_str());
  return code;
}

}  // namespace janus::cli
