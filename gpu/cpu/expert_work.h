// The unit of work the scheduler hands an expert instance. Plain C++ (CUDA-safe).
#pragma once

#include <cstdint>

namespace janus {

/// One (row, logical expert) pair an expert instance must run, with its gate weight.
struct ExpertWork {
  int32_t row;     // row of the layer batch's activations
  int32_t expert;  // logical expert id
  float weight;    // gate weight of this choice
};

}  // namespace janus
