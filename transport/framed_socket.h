// Length-prefixed frames over a stream socket: the framing of Janus's own control
// protocols (the handshake every listening port runs first, transport/secret_handshake.h;
// the remote console, runtime/console/console_wire.h).
//
// A frame is a u32 big-endian payload length, a u8 type, the payload. The reader checks
// each header as soon as its 5 bytes arrive, so a claim past `max_payload` or an unknown
// type closes the connection before anything is allocated for it. Payload fields are u8
// flags and u32-length-prefixed strings, read with bounds checks.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/base/status.h"

namespace janus {

struct Frame {
  uint8_t type = 0;
  std::string payload;
};

/// Header and payload, ready to write.
std::string encode_frame(uint8_t type, const std::string& payload = "");

/// Cuts a byte stream into frames of types [1, max_type].
class FrameReader {
 public:
  FrameReader(uint8_t max_type, uint32_t max_payload) : max_type_(max_type), max_payload_(max_payload) {}
  /// Takes bytes as they arrive.
  void feed(const char* data, size_t n) { buffer_.append(data, n); }
  /// The next whole frame, nullopt until one has arrived, or an error as soon as a header
  /// claims too much or an unknown type: then the peer is not speaking this protocol and
  /// the connection must be closed. Only the next frame's header is judged, so bytes of
  /// another protocol that follow the last frame (a relay's spliced stream) are left alone.
  Result<std::optional<Frame>> next();
  /// Bytes received past the last whole frame (handed on when a relay starts splicing).
  std::string take_rest() { return std::move(buffer_); }

 private:
  uint8_t max_type_;
  uint32_t max_payload_;
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

/// Writes all `n` bytes to a socket; false when the peer is gone.
bool write_all(int fd, const char* data, size_t n);
inline bool write_all(int fd, const std::string& data) { return write_all(fd, data.data(), data.size()); }

/// The next frame from `fd`, waiting until `deadline` (and giving up early once `stop` is
/// set); an error on a timeout, a closed peer or bytes that are not this protocol.
Result<Frame> read_frame(int fd, FrameReader& reader, std::chrono::steady_clock::time_point deadline,
                         const std::atomic<bool>* stop = nullptr);

/// A TCP listener on host:port (port 0: any free port); `bound` gets the port it took.
Result<int> listen_tcp(const std::string& host, uint16_t port, uint16_t* bound);
/// A connected TCP socket (no delay on small writes).
Result<int> connect_tcp(const std::string& host, uint16_t port);

/// A deadline `seconds` from now.
std::chrono::steady_clock::time_point deadline_in(double seconds);

}  // namespace janus
