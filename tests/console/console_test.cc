// The console driven as a user drives it: a real terminal (tmux send-keys and
// capture-pane) on `janus run --console`, a remote `janus console --connect`, and the
// non-interactive forms.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>
#include <thread>

#include "test_util.h"

using namespace std::chrono_literals;

namespace {

const std::string kJanus = std::string(JANUS_BINARY_DIR) + "/janus";
const std::string kLong = std::string(JANUS_SOURCE_DIR) + "/tests/console/long.lua";

std::string sh(const std::string& cmd, int* code = nullptr) {
  auto r = janus::test::run_shell(cmd + " 2>&1");
  REQUIRE(r.has_value());
  if (code) *code = r->code;
  return r->out;
}

bool have_tmux() { return std::system("command -v tmux > /dev/null 2>&1") == 0; }

// One tmux server per test (its own socket), one window running a command.
class Tmux {
 public:
  explicit Tmux(const std::string& command) : socket_("janus-test-" + std::to_string(getpid())) {
    sh("tmux -L " + socket_ + " kill-server");
    sh("tmux -L " + socket_ + " new-session -d -s t -x 220 -y 60 'env JANUS_MODEL_CACHE=" + std::string(JANUS_BINARY_DIR) +
       "/model-cache " + command + "; sleep 30'");
  }
  ~Tmux() { sh("tmux -L " + socket_ + " kill-server"); }
  void keys(const std::string& k) { sh("tmux -L " + socket_ + " send-keys -t t " + k); }
  // Types text literally (shell-quoted for the tmux command line).
  void type(const std::string& text) {
    std::string quoted = "'";
    for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    sh("tmux -L " + socket_ + " send-keys -t t -l " + quoted + "'");
  }
  void line(const std::string& text) {
    type(text);
    keys("Enter");
  }
  std::string screen() { return sh("tmux -L " + socket_ + " capture-pane -p -t t -S -200"); }
  // Waits until the screen matches; returns it (REQUIREs on timeout with the screen shown).
  std::string wait_for(const std::string& pattern, std::chrono::seconds limit = 60s) {
    const std::regex re(pattern);
    const auto t0 = std::chrono::steady_clock::now();
    std::string s;
    while (std::chrono::steady_clock::now() - t0 < limit) {
      s = screen();
      if (std::regex_search(s, re)) return s;
      std::this_thread::sleep_for(100ms);
    }
    FAIL_CHECK("timed out waiting for /" << pattern << "/ on:\n" << s);
    return s;
  }

 private:
  std::string socket_;
};

// A `janus run --listen` in the background; stopped with SIGTERM at the end.
class Server {
 public:
  explicit Server(const std::string& secret) : port_file_(dir_ / "port") {
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      setenv("JANUS_MODEL_CACHE", (std::string(JANUS_BINARY_DIR) + "/model-cache").c_str(), 1);
      const std::string log = dir_ / "log";
      freopen(log.c_str(), "w", stdout);
      freopen(log.c_str(), "a", stderr);
      execl(kJanus.c_str(), "janus", "run", kLong.c_str(), "--listen", "127.0.0.1:0", "--secret", secret.c_str(), "--port-file",
            port_file_.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    const auto t0 = std::chrono::steady_clock::now();
    while (port_ == 0 && std::chrono::steady_clock::now() - t0 < 60s) {
      std::ifstream in(port_file_);
      in >> port_;
      if (port_ == 0) std::this_thread::sleep_for(50ms);
    }
    REQUIRE_MESSAGE(port_ != 0, janus::test::read_file(dir_ / "log"));
  }
  ~Server() {
    kill(pid_, SIGTERM);
    // A deployment that does not stop on SIGTERM is a failure, not a hung test run.
    int status = 0;
    for (int i = 0; i < 400 && waitpid(pid_, &status, WNOHANG) == 0; ++i) std::this_thread::sleep_for(50ms);
    if (waitpid(pid_, &status, WNOHANG) == 0) {
      FAIL_CHECK("janus run did not exit within 20 s of SIGTERM; log:\n" << janus::test::read_file(dir_ / "log"));
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string log() const { return janus::test::read_file(dir_ / "log"); }

 private:
  janus::test::TempDir dir_;
  std::string port_file_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// A raw TCP connection to the console port, as an attacker would open it.
int raw_connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

// Sends `bytes`, then reads until the server closes (true) or 10 s pass (false).
bool closed_after(int fd, const std::string& bytes) {
  if (!bytes.empty()) send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
    if (n < 0) return false;  // timed out with the connection still open
  }
}

struct RawFrame {
  int type = -1;
  std::string payload;
};

// One frame of the console protocol (u32 big-endian length, u8 type, payload), or type -1.
RawFrame read_raw_frame(int fd) {
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  auto read_n = [&](size_t n, std::string* out) {
    out->resize(n);
    size_t got = 0;
    while (got < n) {
      const ssize_t r = recv(fd, out->data() + got, n - got, 0);
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  };
  std::string header;
  RawFrame f;
  if (!read_n(5, &header)) return f;
  const uint32_t len = static_cast<uint32_t>(static_cast<unsigned char>(header[0])) << 24 |
                       static_cast<uint32_t>(static_cast<unsigned char>(header[1])) << 16 |
                       static_cast<uint32_t>(static_cast<unsigned char>(header[2])) << 8 | static_cast<unsigned char>(header[3]);
  if (len > (1u << 20) || !read_n(len, &f.payload)) return f;
  f.type = static_cast<unsigned char>(header[4]);
  return f;
}

long rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

}  // namespace

TEST_CASE("interactive console in a terminal: inspect, pause, step, resume, complete, errors, watch, kill, rescale") {
  if (!have_tmux()) {
    std::printf("SKIPPED: tmux is not installed\n");
    return;
  }
  Tmux t(kJanus + " run " + kLong + " --console");
  t.wait_for("janus>");
  t.line("pause()");
  std::string s = t.wait_for("paused at step [0-9]+");
  t.line("actors()");
  s = t.wait_for("expert-2 +ExpertInstance +cpu");
  CHECK(s.find("attention-1") != std::string::npos);
  CHECK(s.find("busy") != std::string::npos);

  // step(2) from a paused clock runs exactly two steps.
  t.line("c = pause(); print('AT', c.step)");
  s = t.wait_for("AT\\s+[0-9]+");
  const std::regex at_re("AT\\s+([0-9]+)");
  std::string last_at;
  for (std::sregex_iterator it(s.begin(), s.end(), at_re), end; it != end; ++it) last_at = (*it)[1];
  const long before = std::stol(last_at);
  t.line("step(2)");
  t.wait_for("paused at step " + std::to_string(before) + ", 2 more step");
  std::this_thread::sleep_for(500ms);
  t.line("print('NOW', pause().step)");
  t.wait_for("NOW\\s+" + std::to_string(before + 2) + "\\b");

  t.line("requests()");
  t.wait_for("running +attention-[01]");
  t.line("amax()");
  t.wait_for("aebs \\(active\\)");
  t.wait_for("random_replica");
  t.line("experts(1)");
  t.wait_for("layer 1: activations");
  t.line("graph()");
  t.wait_for("kv cache: [0-9]+ values per token per layer, [0-9.]+ kB/token in F32");

  // A bad command and a Lua error print errors; the deployment keeps serving.
  t.line("kill(\"expert-9\")");
  t.wait_for("error: kill\\(\"expert-9\"\\): no actor named 'expert-9'");
  t.line("nosuchthing()");
  t.wait_for("error: attempt to call a nil value \\(global 'nosuchthing'\\)");
  t.line("resume()");
  t.wait_for("running at step");
  t.line("generate({1, 2, 3}, {max_new_tokens = 4})");
  t.wait_for("request [0-9]+: 4 tokens \\(length\\)");

  // Tab completion of commands and of actor names.
  t.keys("C-u");
  t.type("plac");
  t.keys("Tab");
  t.wait_for("janus> placement\\(");
  t.keys("C-u");
  t.type("slow(\"expert-");
  t.keys("Tab");
  t.keys("Tab");
  t.wait_for("expert-0\\S* +\\S*expert-1\\S* +\\S*expert-2");
  t.keys("C-u");

  t.line("watch()");
  t.wait_for("press any key to leave watch");
  t.keys("q");
  t.wait_for("janus>\\s*$");

  // Kill an instance: the Scaler replaces it and the interrupted step re-runs.
  t.line("kill(\"expert-1\")");
  t.wait_for("killed expert-1");
  t.line("generate({5, 6}, {max_new_tokens = 50})");
  t.wait_for("request [0-9]+: 50 tokens \\(length\\)");
  t.line("actors()");
  t.wait_for("expert-1 +ExpertInstance +cpu +local +down");
  t.wait_for("expert-3 +ExpertInstance +cpu +local +up");
  t.line("print('STILL', #actors())");
  t.wait_for("STILL\\s+10");  // the dead one, its replacement and everyone else

  // Rescale while it serves.
  t.line("scale{attention = 3, moe = 4}");
  t.wait_for("scaled to 3 attention shards, 4 expert instances");
  t.line("actors()");
  t.wait_for("attention-2 +AttentionShard +cpu +local +up");
  t.wait_for("expert-4 +ExpertInstance +cpu +local +up");
  t.line("scale{attention = 1}");
  t.wait_for("scaled to 1 attention shards, 4 expert instances");
  t.line("generate({7, 8, 9}, {max_new_tokens = 5})");
  t.wait_for("request [0-9]+: 5 tokens \\(length\\)");
  t.keys("C-d");
}

TEST_CASE("remote console: the right secret attaches, the wrong one is refused, forms agree") {
  Server srv("s3cret");
  const std::string base = kJanus + " console --connect 127.0.0.1:" + std::to_string(srv.port());
  int code = 0;
  std::string bad = sh(base + " --secret wrong --eval 'actors()'", &code);
  CHECK(code != 0);
  CHECK(bad.find("authentication failed: wrong secret") != std::string::npos);

  std::string remote = sh(base + " --secret s3cret --eval 'placement()'", &code);
  CHECK(code == 0);
  CHECK(remote.find("expert-2") != std::string::npos);
  // The same question asked of a local console on the same config gets the same answer.
  std::string local = sh(kJanus + " run " + kLong + " --console --eval 'placement()'", &code);
  CHECK(code == 0);
  CHECK(local == remote);

  // JSON for scripts; a script file; errors reach the client, the deployment keeps serving.
  std::string json = sh(base + " --secret s3cret --json --eval 'actors()'", &code);
  CHECK(code == 0);
  CHECK(json.find("\"kind\":\"ExpertInstance\"") != std::string::npos);
  janus::test::TempDir d;
  janus::test::write_file(d / "s.lua", "local n = 0\nfor _, a in ipairs(actors()) do n = n + 1 end\nprint('ACTORS', n)\n");
  std::string script = sh(base + " --secret s3cret " + (d / "s.lua"), &code);
  CHECK(code == 0);
  CHECK(script.find("ACTORS\t9") != std::string::npos);
  std::string err = sh(base + " --secret s3cret --eval 'step(0)'", &code);
  CHECK(code == 1);
  CHECK(err.find("step(n): n must be between 1") != std::string::npos);
  std::string gen = sh(base + " --secret s3cret --eval 'generate({1,2,3}, {max_new_tokens=3})'", &code);
  CHECK(code == 0);
  CHECK(gen.find("3 tokens") != std::string::npos);

  // The console is sandboxed like configs: no file loading, no bytecode, and a command that
  // never ends is interrupted while the server keeps serving.
  std::string file = sh(base + " --secret s3cret --eval 'loadfile(\"/etc/passwd\")'", &code);
  CHECK(code == 1);
  CHECK_MESSAGE(file.find("attempt to call a nil value (global 'loadfile')") != std::string::npos, file);
  CHECK(file.find("root:") == std::string::npos);
  std::string bytecode = sh(base + " --secret s3cret --eval 'load(string.dump(function() end))'", &code);
  CHECK(code == 1);
  CHECK_MESSAGE(bytecode.find("attempt to call a nil value (global 'load')") != std::string::npos, bytecode);
  std::string loop = sh(base + " --secret s3cret --eval 'while true do end'", &code);
  CHECK(code == 1);
  CHECK_MESSAGE(loop.find("interrupted: more than 250 million Lua instructions") != std::string::npos, loop);
  std::string after = sh(base + " --secret s3cret --eval 'placement()'", &code);
  CHECK(code == 0);
  CHECK(after == remote);

  std::string refused = sh(kJanus + " console --connect 127.0.0.1:1 --secret x --eval 'actors()'", &code);
  CHECK(code != 0);
  CHECK(refused.find("cannot connect to 127.0.0.1:1") != std::string::npos);
}

TEST_CASE("console port under attack: garbage, huge claims, idle floods and guessing leave it serving") {
  Server srv("s3cret");
  const std::string base = kJanus + " console --connect 127.0.0.1:" + std::to_string(srv.port());
  auto eval_ok = [&] {
    int code = 0;
    std::string out = sh(base + " --secret s3cret --eval 'placement()'", &code);
    return code == 0 && out.find("expert-2") != std::string::npos;
  };
  REQUIRE(eval_ok());
  const long rss0 = rss_kb(srv.pid());

  // The 32 bytes that crashed CAF 0.17.6's handshake, and a header claiming 4 GiB, many
  // times over: each connection is dropped, nothing is allocated for the claim.
  const std::string caf_crash = std::string("\x01", 1) + std::string(31, '\0');
  const std::string huge = std::string("\xff\xff\xff\xff\x02", 5);
  for (int i = 0; i < 20; ++i)
    for (const std::string& bytes : {caf_crash, huge}) {
      const int fd = raw_connect(srv.port());
      CHECK(closed_after(fd, bytes));
      close(fd);
    }
  CHECK(kill(srv.pid(), 0) == 0);
  const long rss1 = rss_kb(srv.pid());
  CHECK_MESSAGE(rss1 - rss0 < 64 * 1024, "RSS grew from " << rss0 << " kB to " << rss1 << " kB");
  CHECK(eval_ok());  // garbage guesses nothing: it costs the address no back-off

  // 300 connections that never say anything: at most a few are held, each only for the
  // handshake timeout, and a real console gets in soon after.
  std::vector<int> idle;
  for (int i = 0; i < 300; ++i) idle.push_back(raw_connect(srv.port()));
  bool got_in = false;
  for (int i = 0; i < 40 && !got_in; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    got_in = eval_ok();
  }
  CHECK_MESSAGE(got_in, srv.log());
  for (int fd : idle) close(fd);

  // Guessing: the first wrong secret is answered at once, the next makes the address wait,
  // and a guess during the wait is refused without being checked.
  int code = 0;
  std::string first = sh(base + " --secret wrong --eval 'actors()'", &code);
  CHECK(code != 0);
  CHECK(first.find("authentication failed: wrong secret") != std::string::npos);
  auto guess = [&] {
    const int fd = raw_connect(srv.port());
    RawFrame hello = read_raw_frame(fd);
    std::string reply;
    if (hello.type == 1) {  // HELLO: answer with a well-formed AUTH holding a wrong proof
      const std::string proof(32, 'x');
      std::string auth = {0, 0, 0, 36, 2, 0, 0, 0, 32};
      auth += proof;
      send(fd, auth.data(), auth.size(), MSG_NOSIGNAL);
      reply = read_raw_frame(fd).payload;
    } else {
      reply = hello.payload;
    }
    close(fd);
    return reply;
  };
  CHECK(guess().find("authentication failed: wrong secret") != std::string::npos);
  const std::string blocked = guess();
  CHECK_MESSAGE(blocked.find("too many failed attempts from 127.0.0.1: try again in") != std::string::npos, blocked);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  CHECK(eval_ok());
  // One log line for the first refusal and then every 100th, not one per attempt.
  const std::string log = srv.log();
  size_t lines = 0;
  for (size_t at = log.find("refused 127.0.0.1"); at != std::string::npos; at = log.find("refused 127.0.0.1", at + 1)) ++lines;
  CHECK(lines < 20);
}

TEST_CASE("a console beyond loopback needs a secret chosen by the user; --secret-file keeps it out of ps") {
  int code = 0;
  std::string out = sh("env -u JANUS_SECRET " + kJanus + " run " + kLong + " --listen 0.0.0.0:0", &code);
  CHECK(code == 2);
  CHECK_MESSAGE(out.find("beyond this machine, needs a secret chosen by you") != std::string::npos, out);
  janus::test::TempDir d;
  janus::test::write_file(d / "empty", "\n");
  out = sh(kJanus + " console --connect 127.0.0.1:1 --secret-file " + d / "empty" + " --eval 'actors()'", &code);
  CHECK(code == 2);
  CHECK(out.find("starts with an empty line") != std::string::npos);
  out = sh(kJanus + " console --connect 127.0.0.1:1 --secret-file " + d / "missing" + " --eval 'actors()'", &code);
  CHECK(code == 2);
  CHECK(out.find("--secret-file: cannot read") != std::string::npos);
}

TEST_CASE("a burst of concurrent consoles all get in, answer alike and exit cleanly") {
  // 24 at once is three times the per-address cap on handshakes in flight: the clients
  // retry that refusal. (Clients over CAF once crashed at exit, 3 in 100: double free.)
  Server srv("s3cret");
  janus::test::TempDir d;
  const std::string base = kJanus + " console --connect 127.0.0.1:" + std::to_string(srv.port()) + " --secret s3cret --eval 'placement()'";
  std::string script = "for i in $(seq 1 24); do (" + base + " > " + d / "out." + "$i 2>&1; echo $? > " + d / "rc." + "$i) & done; wait";
  int code = 0;
  sh(script, &code);
  CHECK(code == 0);
  const std::string first = janus::test::read_file(d / "out.1");
  CHECK(first.find("expert-2") != std::string::npos);
  for (int i = 1; i <= 24; ++i) {
    CHECK_MESSAGE(janus::test::read_file(d / ("rc." + std::to_string(i))) == "0\n", janus::test::read_file(d / ("out." + std::to_string(i))));
    CHECK(janus::test::read_file(d / ("out." + std::to_string(i))) == first);
  }
}
