// Files the janus commands write (traces, profiles, simulator tables, port files). A
// command checks its outputs are writable before it starts work that may take an hour,
// and reports a failed write as a failure, never "wrote ..." with exit code 0.
#pragma once

#include <string>

#include "runtime/base/status.h"

namespace janus::cli {

/// Fails (naming the path and the system's reason) unless `path` can be created or
/// appended to. Leaves an existing file as it was; a file it had to create is removed.
Status check_writable(const std::string& path);

/// Creates `dir` and its parents, then checks a file can be created inside it.
Status make_output_dir(const std::string& dir);

/// Writes `text` to `path` (replacing it) and fails unless every byte reached the file.
Status write_output(const std::string& path, const std::string& text);

}  // namespace janus::cli
