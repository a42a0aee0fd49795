// Safetensors files (runtime/model/safetensors.h) from bytes: a checkpoint is downloaded
// from wherever a user found it. The reader only opens files, so the bytes go through a
// temporary file; what it accepts is written back with write_safetensors and read again.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/model/safetensors.h"
#include "tests/fuzz/fuzz_require.h"

using namespace janus;

namespace {

// The two files live in a folder of their own, removed at exit.
struct Scratch {
  std::string dir, in, out;
  Scratch() {
    char tmpl[] = "/tmp/janus-fuzz-safetensors-XXXXXX";
    JANUS_FUZZ_REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    in = dir + "/in.safetensors";
    out = dir + "/out.safetensors";
  }
  ~Scratch() {
    std::remove(in.c_str());
    std::remove(out.c_str());
    rmdir(dir.c_str());
  }
};

const Scratch& scratch() {
  static const Scratch s;
  return s;
}

void write_file(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  JANUS_FUZZ_REQUIRE(f != nullptr);
  JANUS_FUZZ_REQUIRE(size == 0 || std::fwrite(data, 1, size, f) == size);
  JANUS_FUZZ_REQUIRE(std::fclose(f) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_file(scratch().in, data, size);
  auto file = SafetensorsFile::open(scratch().in);
  if (!file.ok()) {
    JANUS_FUZZ_REQUIRE(!file.status().message().empty());
    return 0;
  }
  // Every tensor holds exactly what its shape and dtype need, and fits in the file.
  std::vector<TensorSpec> specs;
  std::vector<const TensorInfo*> infos;
  for (const auto& [name, t] : file->tensors()) {
    JANUS_FUZZ_REQUIRE(t.name == name);
    JANUS_FUZZ_REQUIRE(t.nbytes == static_cast<size_t>(t.numel()) * dtype_size(t.dtype));
    JANUS_FUZZ_REQUIRE(t.nbytes <= size);
    specs.push_back({name, t.dtype, t.shape});
    infos.push_back(&t);
  }
  // Written back and read again: the same tensors with the same bytes and metadata.
  JANUS_FUZZ_REQUIRE(write_safetensors(scratch().out, specs, [&](size_t i, void* dst) {
            if (infos[i]->nbytes > 0) std::memcpy(dst, infos[i]->data, infos[i]->nbytes);
          }, file->metadata()).ok());
  auto again = SafetensorsFile::open(scratch().out);
  JANUS_FUZZ_REQUIRE(again.ok());
  JANUS_FUZZ_REQUIRE(again->metadata() == file->metadata());
  JANUS_FUZZ_REQUIRE(again->tensors().size() == file->tensors().size());
  for (const auto& [name, t] : file->tensors()) {
    auto it = again->tensors().find(name);
    JANUS_FUZZ_REQUIRE(it != again->tensors().end());
    const TensorInfo& u = it->second;
    JANUS_FUZZ_REQUIRE(u.dtype == t.dtype && u.shape == t.shape && u.nbytes == t.nbytes);
    JANUS_FUZZ_REQUIRE(t.nbytes == 0 || std::memcmp(u.data, t.data, t.nbytes) == 0);
  }
  return 0;
}
