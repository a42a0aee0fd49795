// Errors as values. Every fallible call in Janus returns a Status (or a Result<T>),
// and callers propagate it with JANUS_TRY / JANUS_ASSIGN_OR_RETURN, the way NCCL
// propagates ncclResult_t. Messages name what failed and where (file, tensor, key, line)
// so a user can fix the input without reading our code.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace janus {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,  // bad user input: config, checkpoint, command line, frame
  kNotFound,         // a file, tensor, key or actor that should exist does not
  kIo,               // the operating system refused (open, mmap, read, write)
  kUnsupported,      // valid input that this build does not handle (yet)
  kResourceExhausted,// KV cache, slots, memory
  kUnavailable,      // a peer died or is unreachable
  kInternal,         // a broken invariant: a bug in Janus
};

const char* error_code_name(ErrorCode code);

/// The outcome of a fallible call: ok, or a code with a human-readable message.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  /// "invalid argument: <message>"
  std::string to_string() const;

  /// Returns this status with `context + ": "` put in front of the message (no-op when ok).
  Status with_context(const std::string& context) const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return {ErrorCode::kInvalidArgument, std::move(m)}; }
inline Status not_found(std::string m) { return {ErrorCode::kNotFound, std::move(m)}; }
inline Status io_error(std::string m) { return {ErrorCode::kIo, std::move(m)}; }
inline Status unsupported(std::string m) { return {ErrorCode::kUnsupported, std::move(m)}; }
inline Status resource_exhausted(std::string m) { return {ErrorCode::kResourceExhausted, std::move(m)}; }
inline Status unavailable(std::string m) { return {ErrorCode::kUnavailable, std::move(m)}; }
inline Status internal_error(std::string m) { return {ErrorCode::kInternal, std::move(m)}; }

/// A value or the Status that explains why there is none.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}            // NOLINT: implicit on purpose
  Result(Status status) : v_(std::move(status)) {      // NOLINT
    assert(!std::get<Status>(v_).ok() && "Result built from an ok Status has no value");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace janus

#define JANUS_CONCAT_INNER(a, b) a##b
#define JANUS_CONCAT(a, b) JANUS_CONCAT_INNER(a, b)

/// Returns the Status of `expr` from the enclosing function when it is not ok.
#define JANUS_TRY(expr)                                   \
  do {                                                    \
    ::janus::Status janus_try_status_ = (expr);           \
    if (!janus_try_status_.ok()) return janus_try_status_; \
  } while (0)

#define JANUS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

/// `JANUS_ASSIGN_OR_RETURN(auto x, make_x());` binds the value or returns the error.
#define JANUS_ASSIGN_OR_RETURN(lhs, expr) \
  JANUS_ASSIGN_OR_RETURN_IMPL(JANUS_CONCAT(janus_result_, __LINE__), lhs, expr)
