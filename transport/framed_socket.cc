#include "transport/framed_socket.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace janus {

namespace {

constexpr size_t kHeader = 5;

void put_u32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

uint32_t get_u32(const char* p) {
  return static_cast<uint32_t>(static_cast<unsigned char>(p[0])) << 24 | static_cast<uint32_t>(static_cast<unsigned char>(p[1])) << 16 |
         static_cast<uint32_t>(static_cast<unsigned char>(p[2])) << 8 | static_cast<uint32_t>(static_cast<unsigned char>(p[3]));
}

Status malformed(const std::string& what) { return invalid_argument("frame: " + what); }

}  // namespace

std::string encode_frame(uint8_t type, const std::string& payload) {
  std::string out;
  out.reserve(kHeader + payload.size());
  put_u32(out, static_cast<uint32_t>(payload.size()));
  out.push_back(static_cast<char>(type));
  out += payload;
  return out;
}

Result<std::optional<Frame>> FrameReader::next() {
  if (buffer_.size() < kHeader) return std::optional<Frame>();
  const uint32_t len = get_u32(buffer_.data());
  const uint8_t type = static_cast<uint8_t>(buffer_[4]);
  if (len > max_payload_) return malformed("a frame claims " + std::to_string(len) + " bytes, more than " + std::to_string(max_payload_));
  if (type < 1 || type > max_type_) return malformed("unknown frame type " + std::to_string(type));
  if (buffer_.size() - kHeader < len) return std::optional<Frame>();
  Frame f;
  f.type = type;
  f.payload = buffer_.substr(kHeader, len);
  buffer_.erase(0, kHeader + len);
  return std::optional<Frame>(std::move(f));
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

bool write_all(int fd, const char* data, size_t size) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::send(fd, data + done, size - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

Result<Frame> read_frame(int fd, FrameReader& reader, std::chrono::steady_clock::time_point deadline, const std::atomic<bool>* stop) {
  for (;;) {
    JANUS_ASSIGN_OR_RETURN(std::optional<Frame> f, reader.next());
    if (f) return std::move(*f);
    if (stop && stop->load()) return unavailable("shutting down");
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return unavailable("timed out");
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 200)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return unavailable(std::string("poll: ") + std::strerror(errno));
    if (r == 0) continue;
    char buf[16384];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return unavailable("the peer closed the connection");
    reader.feed(buf, static_cast<size_t>(n));
  }
}

std::chrono::steady_clock::time_point deadline_in(double seconds) {
  return std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
}

namespace {

// The first address of host:port on which `use` (bind+listen, or connect) succeeds: a
// socket of it, or the last reason none did, as "cannot <verb> host:port: why".
template <class Use>
Result<int> first_usable_socket(const std::string& host, uint16_t port, bool passive, const char* verb, Use&& use) {
  const std::string where = host + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0)
    return unavailable(std::string("cannot ") + verb + " " + where + ": " + gai_strerror(rc));
  int fd = -1;
  std::string why = "no address";
  for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
    const int s = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (s < 0) continue;
    if (use(s, ai)) {
      fd = s;
    } else {
      why = std::strerror(errno);
      ::close(s);
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) return unavailable(std::string("cannot ") + verb + " " + where + ": " + why);
  return fd;
}

}  // namespace

Result<int> listen_tcp(const std::string& host, uint16_t port, uint16_t* bound) {
  JANUS_ASSIGN_OR_RETURN(int fd, first_usable_socket(host, port, true, "listen on", [](int s, const addrinfo* ai) {
                           const int one = 1;
                           ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
                           return ::bind(s, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(s, 128) == 0;
                         }));
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *bound = ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(a).sin6_port : reinterpret_cast<sockaddr_in&>(a).sin_port);
  return fd;
}

Result<int> connect_tcp(const std::string& host, uint16_t port) {
  JANUS_ASSIGN_OR_RETURN(int fd, first_usable_socket(host, port, false, "connect to",
                                                     [](int s, const addrinfo* ai) { return ::connect(s, ai->ai_addr, ai->ai_addrlen) == 0; }));
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

}  // namespace janus
