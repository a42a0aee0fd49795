// The remote console's framing (transport/framed_socket.h, with the console's frame types
// and limits from runtime/console/console_wire.h) fed hostile bytes: the frame reader, the
// field reader and decode_reply. These bytes come from anyone who can
// reach the console's port, before any secret is checked.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/console/console_wire.h"
#include "tests/fuzz/fuzz_require.h"

using namespace janus;
using namespace janus::console_wire;

namespace {

bool same(const Reply& a, const Reply& b) {
  return a.ok == b.ok && a.text == b.text && a.error == b.error && a.watch == b.watch && a.completions == b.completions;
}

// Reads every frame out of `bytes` fed in pieces of `chunk` bytes; false once the
// reader refused them (which is final).
bool read_frames(const std::string& bytes, size_t chunk, std::vector<Frame>* frames) {
  FrameReader reader = frame_reader();
  for (size_t at = 0; at < bytes.size(); at += chunk) {
    reader.feed(bytes.data() + at, std::min(chunk, bytes.size() - at));
    for (;;) {
      auto f = reader.next();
      if (!f.ok()) return false;
      if (!*f) break;
      frames->push_back(std::move(**f));
    }
  }
  return true;
}

void check_reply(const std::string& payload) {
  auto r = decode_reply(payload);
  if (!r.ok()) {
    JANUS_FUZZ_REQUIRE(!r.status().message().empty());
    return;
  }
  // What decoded encodes back to the same reply, and to the same bytes when the two flag
  // bytes were the canonical 0 or 1.
  const std::string again = encode_reply(*r);
  auto back = decode_reply(again);
  JANUS_FUZZ_REQUIRE(back.ok() && same(*back, *r));
  const size_t watch_at = 1 + 4 + r->text.size() + 4 + r->error.size();
  const auto flag = [&](size_t i) { return static_cast<unsigned char>(payload[i]); };
  if (flag(0) <= 1 && flag(watch_at) <= 1) JANUS_FUZZ_REQUIRE(again == payload);
  else JANUS_FUZZ_REQUIRE(again.size() == payload.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);

  // Frames: the same whether the bytes arrive at once or one by one, and each frame
  // encodes back to the bytes it was read from.
  std::vector<Frame> whole, trickled;
  const bool whole_ok = read_frames(bytes, bytes.size() + 1, &whole);
  const bool trickled_ok = read_frames(bytes, 1 + (size > 0 ? data[0] % 7 : 0), &trickled);
  JANUS_FUZZ_REQUIRE(whole_ok == trickled_ok);
  if (whole_ok) JANUS_FUZZ_REQUIRE(whole.size() == trickled.size());
  size_t at = 0;
  for (size_t i = 0; i < whole.size(); ++i) {
    JANUS_FUZZ_REQUIRE(whole[i].payload.size() <= kMaxPayload);
    if (i < trickled.size()) JANUS_FUZZ_REQUIRE(trickled[i].type == whole[i].type && trickled[i].payload == whole[i].payload);
    const std::string wire = encode_frame(whole[i].type, whole[i].payload);
    JANUS_FUZZ_REQUIRE(bytes.compare(at, wire.size(), wire) == 0);
    at += wire.size();
    check_reply(whole[i].payload);
  }

  // Fields: the raw bytes as a payload too.
  check_reply(bytes);
  FieldReader in(bytes);
  for (int i = 0; i < 8; ++i) {
    auto list = in.strs();
    if (!list.ok()) break;
    std::string rewritten = FieldWriter().strs(*list).take();
    FieldReader again(rewritten);
    auto back = again.strs();
    JANUS_FUZZ_REQUIRE(back.ok() && *back == *list && again.done().ok());
  }
  return 0;
}
