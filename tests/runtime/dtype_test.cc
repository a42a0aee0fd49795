#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "runtime/base/dtype.h"

using namespace janus;

static float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

TEST_CASE("bf16 rounds to nearest even like torch") {
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(f32_to_bf16(-2.0f) == 0xc000);
  CHECK(f32_to_bf16(from_bits(0x3f808000)) == 0x3f80);  // tie, even below
  CHECK(f32_to_bf16(from_bits(0x3f818000)) == 0x3f82);  // tie, even above
  CHECK(f32_to_bf16(from_bits(0x3f808001)) == 0x3f81);  // just above the tie
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  CHECK(bf16_to_f32(f32_to_bf16(INFINITY)) == INFINITY);
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    REQUIRE(f32_to_bf16(f) == h);
  }
}

TEST_CASE("f16 conversions are exact both ways, subnormals and overflow included") {
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(65504.0f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);          // rounds to infinity
  CHECK(f32_to_f16(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);     // half the smallest subnormal: tie to even (0)
  CHECK(f32_to_f16(std::ldexp(3.0f, -25)) == 0x0002);     // 1.5 subnormal units: tie to even (2)
  CHECK(f32_to_f16(-0.0f) == 0x8000);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(f16_to_f32(0x03ff) == std::ldexp(1023.0f, -24));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    REQUIRE(f32_to_f16(f) == h);
  }
}

TEST_CASE("dtype names parse and print") {
  DType t;
  CHECK(parse_dtype("BF16", &t));
  CHECK(t == DType::kBF16);
  CHECK(std::string(dtype_name(t)) == "BF16");
  CHECK_FALSE(parse_dtype("I8", &t));
  CHECK(dtype_size(DType::kF32) == 4);
  CHECK(dtype_size(DType::kF16) == 2);
}
