// The remote console's wire protocol, our own so that nothing unauthenticated reaches an
// actor framework (CAF 0.17.6's middleman, which the console used before, crashed on a
// 32-byte header, allocated whatever a header claimed and greeted anyone with the PID and
// host id). It is the secret handshake of transport/secret_handshake.h under the protocol
// name kProtocol, then one REPLY per request on the frames of transport/framed_socket.h:
//   EVAL{json u8, code}   COMPLETE{prefix}   WATCH{}   ->   REPLY{ok, text, error, watch, completions}
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/status.h"
#include "transport/secret_handshake.h"

namespace janus::console_wire {

inline constexpr const char* kProtocol = "janus-console-1";
inline constexpr uint32_t kMaxPayload = 4u << 20;  // a watch frame or a trace dump fits easily

inline constexpr uint8_t kEval = kHandshakeFrames + 1, kComplete = kHandshakeFrames + 2, kWatch = kHandshakeFrames + 3,
                         kReply = kHandshakeFrames + 4;

/// A reader for everything the console's peers may send.
inline FrameReader frame_reader() { return FrameReader(kReply, kMaxPayload); }

/// What the console answers to any request.
struct Reply {
  bool ok = true;
  std::string text, error;
  bool watch = false;
  std::vector<std::string> completions;
};

std::string encode_reply(const Reply& r);
Result<Reply> decode_reply(const std::string& payload);

}  // namespace janus::console_wire
