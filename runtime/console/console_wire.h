// The remote console's wire protocol, our own so that nothing unauthenticated reaches an
// actor framework: CAF 0.17.6's middleman crashed on a 32-byte header with no payload,
// allocated whatever a header claimed, let system messages (exit_msg) through before any
// secret was checked, and greeted anyone with the PID and host id.
//
// A frame is a u32 big-endian payload length, a u8 type, the payload (at most
// kMaxPayload bytes; a longer claim or an unknown type closes the connection before
// anything is allocated). The server speaks first:
//   server  HELLO{protocol, nonce}            client  AUTH{HMAC-SHA256(secret, "janus-console\0" nonce)}
//   server  WELCOME{} or REFUSED{reason}, then closes on REFUSED
// then one REPLY per request: EVAL{json, code}, COMPLETE{prefix}, WATCH{}.
// Payload fields are u8 flags and u32-length-prefixed strings, read with bounds checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/base/status.h"

namespace janus::console_wire {

inline constexpr const char* kProtocol = "janus-console-1";
inline constexpr uint32_t kMaxPayload = 4u << 20;  // a watch frame or a trace dump fits easily

enum class FrameType : uint8_t { kHello = 1, kAuth, kWelcome, kRefused, kEval, kComplete, kWatch, kReply };

struct Frame {
  FrameType type = FrameType::kHello;
  std::string payload;
};

/// Header and payload, ready to write.
std::string encode(FrameType type, const std::string& payload = "");

/// Cuts a byte stream into frames.
class FrameReader {
 public:
  /// Takes bytes as they arrive. An error (oversized claim, unknown type) is final: the
  /// peer is not speaking this protocol and the connection must be closed.
  Status feed(const char* data, size_t n);
  /// The next whole frame, if one has arrived.
  std::optional<Frame> next();

 private:
  std::string buffer_;
};

class FieldWriter {
 public:
  FieldWriter& u8(uint8_t v);
  FieldWriter& str(const std::string& s);
  FieldWriter& strs(const std::vector<std::string>& v);
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class FieldReader {
 public:
  explicit FieldReader(const std::string& payload) : p_(payload) {}
  Result<uint8_t> u8();
  Result<std::string> str();
  Result<std::vector<std::string>> strs();
  /// Fails when bytes are left over (a malformed frame).
  Status done() const;

 private:
  const std::string& p_;
  size_t at_ = 0;
};

/// What the console answers to any request.
struct Reply {
  bool ok = true;
  std::string text, error;
  bool watch = false;
  std::vector<std::string> completions;
};

std::string encode_reply(const Reply& r);
Result<Reply> decode_reply(const std::string& payload);

/// The client's proof that it holds `secret`, for the server's `nonce`.
std::string auth_proof(const std::string& secret, const std::string& nonce);

}  // namespace janus::console_wire
