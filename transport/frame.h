// The header frame in front of every payload (schemas/transport_frame.capnp) and the
// receive-side checks every transport runs on it. Shared by the inproc and libfabric
// transports so that both accept and refuse exactly the same frames.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace janus::transport {

/// Every frame is this many bytes: a single-segment Cap'n Proto message (segment table,
/// root pointer, 40 data bytes) padded with zeros to a fixed size, so a receiver can post
/// [frame slot | payload buffer] as one scatter list.
constexpr size_t kFrameHeaderBytes = 64;
constexpr uint32_t kFrameMagic = 0x4A4E5346;  // "JNSF"
constexpr uint16_t kFrameVersion = 1;
/// The payload follows as a second message (see fabric.cc: shm's inject limit).
constexpr uint16_t kFrameFlagSplit = 1;

struct FrameHeader {
  uint32_t sender = 0;
  uint32_t epoch = 0;
  uint64_t tag = 0;
  uint64_t bytes = 0;
  uint64_t seq = 0;
  uint16_t flags = 0;
};

/// Writes the frame of `h` to out[0, kFrameHeaderBytes); `out` must be 8-byte aligned.
void encode_frame(const FrameHeader& h, void* out);

enum class FrameCheck {
  kOk,
  kTruncated,     // fewer bytes than a frame
  kMalformed,     // not a Cap'n Proto message, or not ours (magic, version)
};

/// Parses and checks the frame in bytes[0, len) (8-byte aligned); `why` says what was wrong.
/// Never throws, whatever the bytes.
FrameCheck decode_frame(const void* bytes, size_t len, FrameHeader* out, std::string* why);

}  // namespace janus::transport
