#include "transport/frame.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstring>

#include "schemas/transport_frame.capnp.h"
#include "transport/transport.h"

namespace janus::transport {

static_assert(kFrameHeaderBytes == JANUS_TRANSPORT_FRAME_BYTES, "the table and the frame agree on the frame size");

namespace {

constexpr size_t kFrameWords = kFrameHeaderBytes / sizeof(capnp::word);

/// One builder per thread, built once: a frame is the same six words every time with new
/// field values, so encoding is six stores and a copy (no builder set-up per message).
struct Encoder {
  capnp::word scratch[kFrameWords] = {};
  capnp::MallocMessageBuilder message{kj::arrayPtr(scratch, kFrameWords - 1)};
  wire::FrameHeader::Builder root = message.initRoot<wire::FrameHeader>();
  size_t segment_words = 0;

  Encoder() {
    root.setMagic(kFrameMagic);
    root.setVersion(kFrameVersion);
    auto segments = message.getSegmentsForOutput();
    // A single segment that lives in `scratch` (checked: the fast paths rely on it).
    KJ_REQUIRE(segments.size() == 1 && segments[0].begin() == scratch && segments[0].size() < kFrameWords);
    segment_words = segments[0].size();
  }
};

Encoder& encoder() {
  thread_local Encoder e;
  return e;
}

/// The first two words of every frame this build writes: the segment table and the root
/// struct pointer. A frame that starts with them has its whole struct inside the frame,
/// so it can be read without per-field bounds checks; anything else takes the checked path.
struct Canonical {
  uint64_t table = 0, root = 0;
  size_t segment_words = 0;
};

const Canonical& canonical() {
  static const Canonical c = [] {
    alignas(8) unsigned char f[kFrameHeaderBytes];
    encode_frame(FrameHeader{}, f);
    Canonical k;
    std::memcpy(&k.table, f, 8);
    std::memcpy(&k.root, f + 8, 8);
    k.segment_words = encoder().segment_words;
    return k;
  }();
  return c;
}

template <class Reader>
FrameCheck read_fields(Reader f, FrameHeader* out, std::string* why) {
  if (f.getMagic() != kFrameMagic) {
    if (why) *why = "bad magic " + std::to_string(f.getMagic());
    return FrameCheck::kMalformed;
  }
  if (f.getVersion() != kFrameVersion) {
    if (why) *why = "unsupported frame version " + std::to_string(f.getVersion());
    return FrameCheck::kMalformed;
  }
  out->flags = f.getFlags();
  out->sender = f.getSender();
  out->epoch = f.getEpoch();
  out->tag = f.getTag();
  out->bytes = f.getBytes();
  out->seq = f.getSeq();
  if ((out->flags & ~kFrameFlagSplit) != 0) {
    if (why) *why = "unknown frame flags " + std::to_string(out->flags);
    return FrameCheck::kMalformed;
  }
  return FrameCheck::kOk;
}

}  // namespace

void encode_frame(const FrameHeader& h, void* out) {
  // The standard flat serialization: one segment-table word, the segment, zero padding.
  Encoder& e = encoder();
  e.root.setFlags(h.flags);
  e.root.setSender(h.sender);
  e.root.setEpoch(h.epoch);
  e.root.setTag(h.tag);
  e.root.setBytes(h.bytes);
  e.root.setSeq(h.seq);
  const uint32_t table[2] = {0, static_cast<uint32_t>(e.segment_words)};
  auto* o = static_cast<unsigned char*>(out);
  std::memcpy(o, table, sizeof table);
  std::memcpy(o + sizeof table, e.scratch, e.segment_words * sizeof(capnp::word));
  const size_t used = sizeof table + e.segment_words * sizeof(capnp::word);
  std::memset(o + used, 0, kFrameHeaderBytes - used);
}

FrameCheck decode_frame(const void* bytes, size_t len, FrameHeader* out, std::string* why) {
  if (len < kFrameHeaderBytes) {
    if (why) *why = "frame of " + std::to_string(len) + " bytes, a header is " + std::to_string(kFrameHeaderBytes);
    return FrameCheck::kTruncated;
  }
  const auto* words = static_cast<const capnp::word*>(bytes);
  const Canonical& c = canonical();
  uint64_t head[2];
  std::memcpy(head, bytes, sizeof head);
  if (head[0] == c.table && head[1] == c.root) {
    // One segment of segment_words words inside the frame, and a root struct pointer at
    // offset 0 whose data section ends inside that segment: every read is in bounds.
    return read_fields(capnp::readMessageUnchecked<wire::FrameHeader>(words + 1), out, why);
  }
  try {
    capnp::ReaderOptions options;
    options.traversalLimitInWords = kFrameWords;
    options.nestingLimit = 4;
    capnp::FlatArrayMessageReader reader(kj::arrayPtr(words, kFrameWords), options);
    return read_fields(reader.getRoot<wire::FrameHeader>(), out, why);
  } catch (const kj::Exception& e) {
    if (why) *why = std::string("not a Cap'n Proto frame: ") + e.getDescription().cStr();
    return FrameCheck::kMalformed;
  }
}

}  // namespace janus::transport
