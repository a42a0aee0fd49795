#include "runtime/cli/output_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace janus::cli {

namespace {

Status os_refused(const std::string& what, const std::string& path, int err) {
  return io_error("cannot " + what + " " + path + ": " + std::strerror(err));
}

}  // namespace

Status check_writable(const std::string& path) {
  std::error_code ec;
  const bool existed = std::filesystem::exists(path, ec);
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (f == nullptr) return os_refused("write", path, errno);
  std::fclose(f);
  if (!existed) std::filesystem::remove(path, ec);
  return Status::Ok();
}

Status make_output_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return io_error("cannot create directory " + dir + ": " + ec.message());
  return check_writable((std::filesystem::path(dir) / ".janus-write-check").string());
}

Status write_output(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return os_refused("write", path, errno);
  const size_t n = std::fwrite(text.data(), 1, text.size(), f);
  const int write_errno = errno;
  const bool closed = std::fclose(f) == 0;
  if (n != text.size() || !closed) return os_refused("write", path, n != text.size() ? write_errno : errno);
  return Status::Ok();
}

}  // namespace janus::cli
