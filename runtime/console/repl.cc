#include "runtime/console/repl.h"

#include <readline/history.h>
#include <readline/readline.h>
#include <sys/select.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace janus {
namespace {

const ConsoleHooks* g_hooks = nullptr;  // readline's completion callbacks take no context
std::vector<std::string> g_matches;

char* match_generator(const char*, int state) {
  if (state >= static_cast<int>(g_matches.size())) return nullptr;
  return strdup(g_matches[static_cast<size_t>(state)].c_str());
}

char** attempt_completion(const char* text, int, int) {
  rl_attempted_completion_over = 1;  // never fall back to file names
  g_matches = g_hooks && g_hooks->complete ? g_hooks->complete(text) : std::vector<std::string>{};
  return rl_completion_matches(text, match_generator);
}

std::string history_path() {
  const char* home = std::getenv("HOME");
  return home ? std::string(home) + "/.janus_console_history" : "";
}

// Redraws the live view until a key is pressed.
void watch_loop(const ConsoleHooks& hooks) {
  termios old{};
  const bool tty = isatty(STDIN_FILENO) != 0;
  if (tty) {
    tcgetattr(STDIN_FILENO, &old);
    termios raw = old;
    raw.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    tcsetattr(STDIN_FILENO, TCSANOW, &raw);
  }
  for (;;) {
    const std::string frame = hooks.watch_frame();
    std::printf("\033[H\033[2J%s", frame.c_str());
    std::fflush(stdout);
    fd_set fds;
    FD_ZERO(&fds);
    FD_SET(STDIN_FILENO, &fds);
    timeval tv{0, 500000};
    if (select(STDIN_FILENO + 1, &fds, nullptr, nullptr, &tv) > 0) {
      char c;
      if (read(STDIN_FILENO, &c, 1) >= 0) break;
    }
  }
  if (tty) tcsetattr(STDIN_FILENO, TCSANOW, &old);
  std::printf("\n");
}

void show(const ConsoleOutput& out) {
  std::fputs(out.text.c_str(), stdout);
  if (!out.ok) std::fprintf(stdout, "error: %s\n", out.error.c_str());
  std::fflush(stdout);
}

}  // namespace

int run_repl(const ConsoleHooks& hooks, const std::string& banner) {
  g_hooks = &hooks;
  rl_attempted_completion_function = attempt_completion;
  rl_completer_word_break_characters = const_cast<char*>(" \t\n(,=");
  rl_completer_quote_characters = const_cast<char*>("");
  rl_completion_append_character = '\0';
  const std::string hist = history_path();
  if (!hist.empty()) read_history(hist.c_str());
  std::printf("%s\n", banner.c_str());
  for (;;) {
    char* line = readline("janus> ");
    if (line == nullptr) break;  // Ctrl-D
    std::string code = line;
    std::free(line);
    if (code.find_first_not_of(" \t") == std::string::npos) continue;
    add_history(code.c_str());
    if (code == "quit" || code == "exit" || code == "quit()" || code == "exit()") break;
    ConsoleOutput out = hooks.eval(code, false);
    show(out);
    if (out.ok && out.watch) watch_loop(hooks);
  }
  if (!hist.empty()) write_history(hist.c_str());
  std::printf("\n");
  return 0;
}

int run_console_code(const ConsoleHooks& hooks, const std::string& code, bool json) {
  ConsoleOutput out = hooks.eval(code, json);
  std::fputs(out.text.c_str(), stdout);
  if (out.ok && out.watch) std::fputs(hooks.watch_frame().c_str(), stdout);
  std::fflush(stdout);
  if (!out.ok) {
    std::fprintf(stderr, "error: %s\n", out.error.c_str());
    return 1;
  }
  return 0;
}

}  // namespace janus
