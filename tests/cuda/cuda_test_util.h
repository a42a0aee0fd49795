// GPU tests skip cleanly where no GPU is present: they print the marker ctest's
// SKIP_REGULAR_EXPRESSION looks for (tests/CMakeLists.txt) and return.
#pragma once

#include <cstdio>

#include "gpu/cuda/device.h"

#define JANUS_SKIP_WITHOUT_GPU()                                  \
  do {                                                            \
    if (::janus::cuda::device_count() == 0) {                     \
      std::printf("SKIPPED: no CUDA device\n");                   \
      std::fflush(stdout);                                        \
      return;                                                     \
    }                                                             \
  } while (0)
