// Command-line options of the janus subcommands: declared up front, so an unknown
// option, a missing value or a malformed number is refused with a message that names it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/base/status.h"

namespace janus::cli {

class Args {
 public:
  /// `flags` take no value; `options` take one (`--key value` or `--key=value`) and may
  /// repeat. Anything not starting with "--" is a positional argument.
  static Result<Args> parse(const std::vector<std::string>& argv, const std::vector<std::string>& flags,
                            const std::vector<std::string>& options);

  bool flag(const std::string& name) const { return flags_.count(name) > 0; }
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  /// The last value given for an option, or `dflt`.
  std::string get(const std::string& name, const std::string& dflt = "") const;
  std::vector<std::string> all(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

  Result<int64_t> get_int(const std::string& name, int64_t dflt) const;
  Result<double> get_double(const std::string& name, double dflt) const;

 private:
  std::map<std::string, bool> flags_;
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

/// The deployment's shared secret: the first line of --secret-file, else --secret (which
/// `ps` shows to every user of the machine), else $JANUS_SECRET; "" when none is given.
/// Fails when the file cannot be read or is empty.
Result<std::string> secret_option(const Args& a);

/// "5,17,99" -> {5, 17, 99}; refuses empty items and non-integers.
Result<std::vector<int32_t>> parse_id_list(const std::string& text, const std::string& what);

}  // namespace janus::cli
