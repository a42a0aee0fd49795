#include "runtime/console/console_wire.h"

#include "runtime/base/secret.h"

namespace janus::console_wire {

namespace {

constexpr size_t kHeader = 5;

void put_u32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

uint32_t get_u32(const char* p) {
  return static_cast<uint32_t>(static_cast<unsigned char>(p[0])) << 24 | static_cast<uint32_t>(static_cast<unsigned char>(p[1])) << 16 |
         static_cast<uint32_t>(static_cast<unsigned char>(p[2])) << 8 | static_cast<uint32_t>(static_cast<unsigned char>(p[3]));
}

bool known_type(uint8_t t) { return t >= static_cast<uint8_t>(FrameType::kHello) && t <= static_cast<uint8_t>(FrameType::kReply); }

Status malformed(const std::string& what) { return invalid_argument("console frame: " + what); }

}  // namespace

std::string encode(FrameType type, const std::string& payload) {
  std::string out;
  out.reserve(kHeader + payload.size());
  put_u32(out, static_cast<uint32_t>(payload.size()));
  out.push_back(static_cast<char>(type));
  out += payload;
  return out;
}

Status FrameReader::feed(const char* data, size_t n) {
  buffer_.append(data, n);
  // Check every complete header now, before its payload is waited for or stored.
  size_t at = 0;
  while (buffer_.size() - at >= kHeader) {
    const uint32_t len = get_u32(buffer_.data() + at);
    const uint8_t type = static_cast<uint8_t>(buffer_[at + 4]);
    if (len > kMaxPayload) return malformed("a frame claims " + std::to_string(len) + " bytes, more than " + std::to_string(kMaxPayload));
    if (!known_type(type)) return malformed("unknown frame type " + std::to_string(type));
    if (buffer_.size() - at - kHeader < len) break;
    at += kHeader + len;
  }
  return Status::Ok();
}

std::optional<Frame> FrameReader::next() {
  if (buffer_.size() < kHeader) return std::nullopt;
  const uint32_t len = get_u32(buffer_.data());
  if (buffer_.size() - kHeader < len) return std::nullopt;
  Frame f;
  f.type = static_cast<FrameType>(buffer_[4]);
  f.payload = buffer_.substr(kHeader, len);
  buffer_.erase(0, kHeader + len);
  return f;
}

FieldWriter& FieldWriter::u8(uint8_t v) {
  out_.push_back(static_cast<char>(v));
  return *this;
}

FieldWriter& FieldWriter::str(const std::string& s) {
  put_u32(out_, static_cast<uint32_t>(s.size()));
  out_ += s;
  return *this;
}

FieldWriter& FieldWriter::strs(const std::vector<std::string>& v) {
  put_u32(out_, static_cast<uint32_t>(v.size()));
  for (const std::string& s : v) str(s);
  return *this;
}

Result<uint8_t> FieldReader::u8() {
  if (at_ + 1 > p_.size()) return malformed("truncated flag");
  return static_cast<uint8_t>(p_[at_++]);
}

Result<std::string> FieldReader::str() {
  if (p_.size() - at_ < 4) return malformed("truncated string length");
  const uint32_t len = get_u32(p_.data() + at_);
  if (p_.size() - at_ - 4 < len) return malformed("a string claims " + std::to_string(len) + " bytes past the frame's end");
  std::string s = p_.substr(at_ + 4, len);
  at_ += 4 + len;
  return s;
}

Result<std::vector<std::string>> FieldReader::strs() {
  if (p_.size() - at_ < 4) return malformed("truncated list length");
  const uint32_t n = get_u32(p_.data() + at_);
  at_ += 4;
  // Each element takes at least its 4-byte length: a larger count cannot be honest.
  if (n > (p_.size() - at_) / 4) return malformed("a list claims " + std::to_string(n) + " strings past the frame's end");
  std::vector<std::string> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    JANUS_ASSIGN_OR_RETURN(std::string s, str());
    out.push_back(std::move(s));
  }
  return out;
}

Status FieldReader::done() const {
  if (at_ != p_.size()) return malformed(std::to_string(p_.size() - at_) + " unexpected bytes at the end");
  return Status::Ok();
}

std::string encode_reply(const Reply& r) {
  return FieldWriter().u8(r.ok).str(r.text).str(r.error).u8(r.watch).strs(r.completions).take();
}

Result<Reply> decode_reply(const std::string& payload) {
  FieldReader in(payload);
  Reply r;
  JANUS_ASSIGN_OR_RETURN(uint8_t ok, in.u8());
  JANUS_ASSIGN_OR_RETURN(r.text, in.str());
  JANUS_ASSIGN_OR_RETURN(r.error, in.str());
  JANUS_ASSIGN_OR_RETURN(uint8_t watch, in.u8());
  JANUS_ASSIGN_OR_RETURN(r.completions, in.strs());
  JANUS_TRY(in.done());
  r.ok = ok != 0;
  r.watch = watch != 0;
  return r;
}

std::string auth_proof(const std::string& secret, const std::string& nonce) {
  return hmac_sha256(secret, std::string("janus-console") + '\0' + nonce);
}

}  // namespace janus::console_wire
