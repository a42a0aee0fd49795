// Reading and writing safetensors files, memory-mapped.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of JSON that
// name every tensor (dtype, shape, [begin, end) byte offsets into the data region), and
// the data region. Reading validates all of it before any tensor is handed out: a
// truncated file, offsets past the end or overlapping, a size that disagrees with the
// shape, or a dtype Janus cannot compute with is an error that names the file and the
// tensor, never a crash.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/base/dtype.h"
#include "runtime/base/status.h"

namespace janus {

/// A read-only memory mapping of a whole file; unmapped when the last owner lets go.
class MappedFile {
 public:
  static Result<std::shared_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

/// One tensor inside a mapped checkpoint file. `data` stays valid while the file it
/// came from is owned (the Checkpoint or SafetensorsFile that produced it).
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // path of the file holding it, for error messages

  int64_t numel() const;
  std::string shape_string() const;  // "[64, 32]"
};

/// One validated, memory-mapped .safetensors file.
class SafetensorsFile {
 public:
  static Result<SafetensorsFile> open(const std::string& path);

  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_->path(); }

 private:
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// A checkpoint directory: `model.safetensors`, or shards listed by
/// `model.safetensors.index.json` (every listed tensor must be in the shard the index
/// names, and every tensor in a shard must be listed).
class Checkpoint {
 public:
  static Result<Checkpoint> open(const std::string& dir);

  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::string& dir() const { return dir_; }
  /// The file names that hold the tensors, relative to dir().
  std::vector<std::string> files() const;

 private:
  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, TensorInfo> tensors_;
};

/// What to write for one tensor; the bytes come from a fill callback so that multi-GB
/// checkpoints are produced in place, in parallel, without a second copy in memory.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
};

/// Writes `path` as a safetensors file. `fill(i, dst)` must write all bytes of tensor i
/// (dtype_size * numel) to dst; it is called once per tensor, possibly from several
/// threads at once. `progress(done, total)` (may be empty) reports bytes written.
Status write_safetensors(const std::string& path, const std::vector<TensorSpec>& tensors,
                         const std::function<void(size_t index, void* dst)>& fill,
                         const std::map<std::string, std::string>& metadata = {},
                         const std::function<void(size_t done, size_t total)>& progress = {});

}  // namespace janus
