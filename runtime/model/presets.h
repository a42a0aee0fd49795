// Built-in model shapes and the deterministic random checkpoints `janus make-model`
// writes for them. Weights come from a counter-based generator keyed by (seed, tensor
// name, element index), so a preset and seed give the same bytes on any machine and
// any thread count, and a multi-GB checkpoint is written in parallel in place.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/dtype.h"
#include "runtime/model/model_config.h"
#include "runtime/base/status.h"

namespace janus {

struct ModelPreset {
  std::string name;
  std::string description;
  ModelConfig config;
  DType default_dtype = DType::kF32;
};

/// tiny-qwen3-moe (the default model), tiny-mixtral, tiny-qwen2-moe, tiny-olmoe, gpu-qwen3-moe, dsv2-slice.
const std::vector<ModelPreset>& model_presets();
const ModelPreset* find_preset(const std::string& name);

/// The default model of `janus run` and `janus generate` without --model.
inline constexpr const char* kDefaultPreset = "tiny-qwen3-moe";
inline constexpr uint64_t kDefaultSeed = 0;

/// Writes DIR/config.json and DIR/model.safetensors for the preset (DIR is created).
/// Shows a progress bar on stderr when `progress` is set.
Status make_model(const ModelPreset& preset, const std::string& dir, uint64_t seed, DType dtype, bool progress);

/// Where a preset's checkpoint is cached: $JANUS_MODEL_CACHE, else
/// $XDG_CACHE_HOME/janus/models, else ~/.cache/janus/models; one folder per
/// (preset, seed, dtype).
std::string preset_cache_dir(const std::string& preset, uint64_t seed, DType dtype);

/// The cached checkpoint of a preset, made on first use. Returns its directory.
Result<std::string> ensure_preset_model(const std::string& preset, uint64_t seed, DType dtype, bool progress);

}  // namespace janus
