// The transport's frame header decoder (transport/frame.h): the first 64 bytes of every
// message a transport receives, from whichever peer sent it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "transport/frame.h"
#include "tests/fuzz/fuzz_require.h"

using namespace janus::transport;

namespace {

bool same(const FrameHeader& a, const FrameHeader& b) {
  return a.sender == b.sender && a.epoch == b.epoch && a.tag == b.tag && a.bytes == b.bytes && a.seq == b.seq && a.flags == b.flags;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Received frames sit in 8-byte aligned slots; copy there, exactly `size` long so that
  // any read past the end is ASan's to see.
  uint64_t* words = new uint64_t[size / 8 + 1];
  std::memcpy(words, data, size);
  FrameHeader h;
  std::string why;
  const FrameCheck c = decode_frame(words, size, &h, &why);
  delete[] words;
  if (c != FrameCheck::kOk) {
    JANUS_FUZZ_REQUIRE(!why.empty());
    JANUS_FUZZ_REQUIRE(c != FrameCheck::kTruncated || size < kFrameHeaderBytes);
    return 0;
  }
  JANUS_FUZZ_REQUIRE(size >= kFrameHeaderBytes);
  // What was accepted encodes to a frame that decodes to the same header.
  alignas(8) unsigned char again[kFrameHeaderBytes];
  encode_frame(h, again);
  FrameHeader back;
  JANUS_FUZZ_REQUIRE(decode_frame(again, sizeof again, &back, &why) == FrameCheck::kOk && same(back, h));
  return 0;
}
