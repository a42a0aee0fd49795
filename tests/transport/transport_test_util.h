// Helpers for the transport tests: deterministic payload bytes, and running scenarios in
// forked processes. Every libfabric call of the tests happens in a child process, so the
// test runner itself never initialises libfabric before it forks the next pair.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace janus::test {

/// The 8-byte words of fill_bytes(seed): xorshift64 from a mixed seed, zero read as 1.
class PayloadWords {
 public:
  explicit PayloadWords(uint64_t seed) : x_(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  uint64_t next() {
    x_ ^= x_ << 13;
    x_ ^= x_ >> 7;
    x_ ^= x_ << 17;
    return x_ == 0 ? 1 : x_;
  }
  /// The word the last n < 8 bytes are cut from (every byte nonzero).
  uint64_t tail() { return next() | 0x0101010101010101ull; }

 private:
  uint64_t x_;
};

/// Fills p[0, n) with pseudo-random bytes from `seed` (no zero 8-byte words, so a buffer
/// that was never written cannot pass for one that was).
inline void fill_bytes(void* p, size_t n, uint64_t seed) {
  PayloadWords words(seed);
  auto* b = static_cast<unsigned char*>(p);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = words.next();
    std::memcpy(b + i, &v, 8);
  }
  if (i < n) {
    const uint64_t v = words.tail();
    std::memcpy(b + i, &v, n - i);
  }
}

/// True when p[0, n) holds exactly what fill_bytes(seed) writes.
inline bool check_bytes(const void* p, size_t n, uint64_t seed) {
  PayloadWords words(seed);
  const auto* b = static_cast<const unsigned char*>(p);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = words.next();
    if (std::memcmp(b + i, &v, 8) != 0) return false;
  }
  if (i < n) {
    const uint64_t v = words.tail();
    if (std::memcmp(b + i, &v, n - i) != 0) return false;
  }
  return true;
}

/// A scenario returns "" on success, or what went wrong.
using Scenario = std::function<std::string()>;

#define TEST_EXPECT(cond, what)                                                                        \
  do {                                                                                                 \
    if (!(cond)) return std::string(__FILE__ ":") + std::to_string(__LINE__) + ": " + (what);         \
  } while (0)

#define TEST_OK(status_expr)                                                                          \
  do {                                                                                                \
    const ::janus::Status s_ = (status_expr);                                                         \
    if (!s_.ok()) return std::string(__FILE__ ":") + std::to_string(__LINE__) + ": " + s_.to_string(); \
  } while (0)

struct Child {
  pid_t pid = -1;
  int result_fd = -1;
};

/// Runs `s` in a forked child (killed by SIGALRM after `timeout_s`); its verdict comes
/// back through a pipe.
inline Child spawn(const Scenario& s, unsigned timeout_s = 30) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    alarm(timeout_s);
    std::string r;
    try {
      r = s();
    } catch (const std::exception& e) {
      r = std::string("exception: ") + e.what();
    }
    const char* p = r.data();
    size_t left = r.size();
    while (left > 0) {
      const ssize_t w = write(fds[1], p, left);
      if (w <= 0) break;
      p += w;
      left -= static_cast<size_t>(w);
    }
    close(fds[1]);
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(r.empty() ? 0 : 1);
  }
  close(fds[1]);
  return {pid, fds[0]};
}

/// Waits for a child: "" when it succeeded, else its message (or how it died).
inline std::string join(const Child& c) {
  if (c.pid < 0) return "fork failed";
  std::string msg;
  char buf[512];
  ssize_t n;
  while ((n = read(c.result_fd, buf, sizeof buf)) > 0) msg.append(buf, static_cast<size_t>(n));
  close(c.result_fd);
  int st = 0;
  waitpid(c.pid, &st, 0);
  if (WIFSIGNALED(st)) return msg + " [child killed by signal " + std::to_string(WTERMSIG(st)) + "]";
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return msg.empty() ? "child failed without a message" : msg;
  return msg;
}

inline std::string run_in_child(const Scenario& s, unsigned timeout_s = 30) { return join(spawn(s, timeout_s)); }

/// A pair of pipes between two children, for exchanging addresses (the control plane's job
/// in the runtime) and for barriers.
struct PipePair {
  int a_to_b[2] = {-1, -1};
  int b_to_a[2] = {-1, -1};
  PipePair() {
    if (pipe(a_to_b) != 0 || pipe(b_to_a) != 0) std::perror("pipe");
  }
  ~PipePair() {
    for (int fd : {a_to_b[0], a_to_b[1], b_to_a[0], b_to_a[1]})
      if (fd >= 0) close(fd);
  }
  int write_fd(int role) const { return role == 0 ? a_to_b[1] : b_to_a[1]; }
  int read_fd(int role) const { return role == 0 ? b_to_a[0] : a_to_b[0]; }
};

inline bool send_blob(int fd, const std::vector<char>& b) {
  const uint64_t n = b.size();
  return write(fd, &n, sizeof n) == sizeof n && (n == 0 || write(fd, b.data(), n) == static_cast<ssize_t>(n));
}

inline bool recv_blob(int fd, std::vector<char>* b) {
  uint64_t n = 0;
  if (read(fd, &n, sizeof n) != sizeof n || n > (1u << 20)) return false;
  b->resize(n);
  size_t got = 0;
  while (got < n) {
    const ssize_t r = read(fd, b->data() + got, n - got);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

/// Both sides call it; returns when both arrived.
inline bool barrier(const PipePair& p, int role) {
  char c = 'b';
  return write(p.write_fd(role), &c, 1) == 1 && read(p.read_fd(role), &c, 1) == 1;
}

}  // namespace janus::test
