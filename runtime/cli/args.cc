#include "runtime/cli/args.h"

#include <cstdlib>
#include <fstream>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace janus::cli {

Result<Args> Args::parse(const std::vector<std::string>& argv, const std::vector<std::string>& flags,
                         const std::vector<std::string>& options) {
  Args a;
  auto is = [](const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); };
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      a.positional_.push_back(arg);
      continue;
    }
    std::string key = arg.substr(2), value;
    bool inline_value = false;
    if (auto eq = key.find('='); eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
      inline_value = true;
    }
    if (is(flags, key)) {
      if (inline_value) return invalid_argument("option --" + key + " takes no value");
      a.flags_[key] = true;
    } else if (is(options, key)) {
      if (!inline_value) {
        if (i + 1 >= argv.size()) return invalid_argument("option --" + key + " needs a value");
        value = argv[++i];
      }
      a.values_[key].push_back(value);
    } else {
      return invalid_argument("unknown option --" + key);
    }
  }
  return a;
}

std::string Args::get(const std::string& name, const std::string& dflt) const {
  auto it = values_.find(name);
  return it == values_.end() ? dflt : it->second.back();
}

std::vector<std::string> Args::all(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

Result<int64_t> Args::get_int(const std::string& name, int64_t dflt) const {
  if (!has(name)) return dflt;
  const std::string s = get(name);
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0) return invalid_argument("--" + name + ": '" + s + "' is not an integer");
  return static_cast<int64_t>(v);
}

Result<double> Args::get_double(const std::string& name, double dflt) const {
  if (!has(name)) return dflt;
  const std::string s = get(name);
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno != 0) return invalid_argument("--" + name + ": '" + s + "' is not a number");
  return v;
}

Result<std::vector<int32_t>> parse_id_list(const std::string& text, const std::string& what) {
  std::vector<int32_t> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno != 0 || v < 0 || v > INT32_MAX)
      return invalid_argument(what + ": '" + item + "' is not a token id (want a comma-separated list such as 5,17,99)");
    out.push_back(static_cast<int32_t>(v));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

Result<std::string> secret_option(const Args& a) {
  if (a.has("secret-file")) {
    std::ifstream in(a.get("secret-file"));
    std::string line;
    if (!in || !std::getline(in, line)) return invalid_argument("--secret-file: cannot read " + a.get("secret-file"));
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty()) return invalid_argument("--secret-file: " + a.get("secret-file") + " starts with an empty line");
    return line;
  }
  if (!a.get("secret").empty()) return a.get("secret");
  const char* env = std::getenv("JANUS_SECRET");
  return std::string(env ? env : "");
}

}  // namespace janus::cli
