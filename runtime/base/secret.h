// Shared secrets, proven without sending them: HMAC-SHA256 of a fresh nonce, compared in
// constant time. Used by every listening port that admits peers (the remote console,
// runtime/console/console_remote.h; the coordinator's node join, actors/node_protocol.h).
#pragma once

#include <cstddef>
#include <string>

namespace janus {

/// HMAC-SHA256(key, message): 32 raw bytes.
std::string hmac_sha256(const std::string& key, const std::string& message);

/// Equal length and bytes, in time that depends on the length only (no early exit on
/// the first difference, so a guesser learns nothing from timing).
bool equal_constant_time(const std::string& a, const std::string& b);

/// `n` bytes from the operating system's cryptographic generator.
std::string random_bytes(size_t n);

/// Lower-case hex of raw bytes.
std::string to_hex(const std::string& bytes);

}  // namespace janus
