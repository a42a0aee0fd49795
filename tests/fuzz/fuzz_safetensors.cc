// Safetensors files (runtime/model/safetensors.h) from bytes: a checkpoint is downloaded
// from wherever a user found it. The reader only opens files, so the bytes go through a
// temporary file; what it accepts is written back with write_safetensors and read again.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/model/safetensors.h"

using namespace janus;

namespace {

void require(bool ok) {
  if (!ok) std::abort();
}

const std::string& scratch(const char* which) {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/janus-fuzz-safetensors-XXXXXX";
    const char* d = mkdtemp(tmpl);
    require(d != nullptr);
    return std::string(d);
  }();
  static const std::string in = dir + "/in.safetensors", out = dir + "/out.safetensors";
  return which[0] == 'i' ? in : out;
}

void write_file(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  require(f != nullptr);
  require(size == 0 || std::fwrite(data, 1, size, f) == size);
  require(std::fclose(f) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_file(scratch("in"), data, size);
  auto file = SafetensorsFile::open(scratch("in"));
  if (!file.ok()) {
    require(!file.status().message().empty());
    return 0;
  }
  // Every tensor holds exactly what its shape and dtype need, and fits in the file.
  std::vector<TensorSpec> specs;
  std::vector<const TensorInfo*> infos;
  for (const auto& [name, t] : file->tensors()) {
    require(t.name == name);
    require(t.nbytes == static_cast<size_t>(t.numel()) * dtype_size(t.dtype));
    require(t.nbytes <= size);
    specs.push_back({name, t.dtype, t.shape});
    infos.push_back(&t);
  }
  // Written back and read again: the same tensors with the same bytes and metadata.
  require(write_safetensors(scratch("out"), specs, [&](size_t i, void* dst) {
            if (infos[i]->nbytes > 0) std::memcpy(dst, infos[i]->data, infos[i]->nbytes);
          }, file->metadata()).ok());
  auto again = SafetensorsFile::open(scratch("out"));
  require(again.ok());
  require(again->metadata() == file->metadata());
  require(again->tensors().size() == file->tensors().size());
  for (const auto& [name, t] : file->tensors()) {
    auto it = again->tensors().find(name);
    require(it != again->tensors().end());
    const TensorInfo& u = it->second;
    require(u.dtype == t.dtype && u.shape == t.shape && u.nbytes == t.nbytes);
    require(t.nbytes == 0 || std::memcmp(u.data, t.data, t.nbytes) == 0);
  }
  return 0;
}
