// The fuzz targets' assertion: a broken invariant aborts, so that libFuzzer keeps the
// input as a crash and the corpus replay test fails, in every build type (assert() is
// compiled out of Release).
#pragma once

#include <cstdio>
#include <cstdlib>

#define JANUS_FUZZ_REQUIRE(cond)                                                                 \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "%s:%d: fuzz invariant broken: %s\n", __FILE__, __LINE__, #cond);    \
      std::abort();                                                                              \
    }                                                                                            \
  } while (0)
