#include "runtime/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/base/parallel.h"

namespace janus {

using nlohmann::json;

// The safetensors reference implementation refuses headers above 100 MB; so do we, so
// that a corrupt length cannot make us parse gigabytes of garbage.
static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

Result<std::shared_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) return not_found(path + ": no such file");
    return io_error(path + ": cannot open: " + std::strerror(e));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return io_error(path + ": cannot stat: " + std::strerror(e));
  }
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      return io_error(path + ": cannot mmap: " + std::strerror(e));
    }
    f->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return f;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_string() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {

bool is_uint(const json& j) { return j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0); }

Status parse_entry(const std::string& path, const std::string& name, const json& e, uint64_t data_size,
                   TensorInfo* out, uint64_t* begin, uint64_t* end) {
  auto err = [&](const std::string& what) { return invalid_argument(path + ": tensor '" + name + "': " + what); };
  if (!e.is_object()) return err("header entry is not a JSON object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!e.contains(key)) return err(std::string("header entry has no '") + key + "'");
  if (!e["dtype"].is_string()) return err("'dtype' is not a string");
  std::string dt = e["dtype"].get<std::string>();
  if (!parse_dtype(dt.c_str(), &out->dtype))
    return err("dtype '" + dt + "' is not one Janus reads (F32, BF16, F16)");
  const json& shape = e["shape"];
  if (!shape.is_array()) return err("'shape' is not an array");
  out->shape.clear();
  for (const json& d : shape) {
    if (!is_uint(d)) return err("'shape' holds something other than a non-negative integer");
    out->shape.push_back(d.get<int64_t>());
  }
  const json& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !is_uint(off[0]) || !is_uint(off[1]))
    return err("'data_offsets' is not a pair of non-negative integers");
  *begin = off[0].get<uint64_t>();
  *end = off[1].get<uint64_t>();
  if (*begin > *end) return err("data_offsets [" + std::to_string(*begin) + ", " + std::to_string(*end) + ") end before they begin");
  if (*end > data_size)
    return err("data_offsets [" + std::to_string(*begin) + ", " + std::to_string(*end) + ") run past the end of the data (" +
               std::to_string(data_size) + " bytes): the file is truncated or the header is wrong");
  // numel overflow guard: shapes from a hostile header could multiply past 2^63.
  uint64_t numel = 1;
  for (int64_t d : out->shape) {
    if (d != 0 && numel > (UINT64_MAX / 8) / static_cast<uint64_t>(d)) return err("shape " + out->shape_string() + " is absurdly large");
    numel *= static_cast<uint64_t>(d);
  }
  uint64_t want = numel * dtype_size(out->dtype);
  if (*end - *begin != want)
    return err("holds " + std::to_string(*end - *begin) + " bytes but shape " + out->shape_string() + " of " + dt + " needs " +
               std::to_string(want));
  out->name = name;
  out->nbytes = static_cast<size_t>(want);
  return Status::Ok();
}

}  // namespace

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  JANUS_ASSIGN_OR_RETURN(auto file, MappedFile::open(path));
  const size_t size = file->size();
  if (size < 8)
    return invalid_argument(path + ": truncated: " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file->data()[i];
  if (header_len > kMaxHeaderBytes)
    return invalid_argument(path + ": header length " + std::to_string(header_len) + " exceeds the 100 MB limit: not a safetensors file?");
  if (header_len > size - 8)
    return invalid_argument(path + ": truncated: header length " + std::to_string(header_len) + " runs past the end of the file (" +
                            std::to_string(size) + " bytes)");
  const char* hdr = reinterpret_cast<const char*>(file->data() + 8);
  json header;
  try {
    header = json::parse(hdr, hdr + header_len);
  } catch (const json::exception& e) {
    return invalid_argument(path + ": malformed header JSON: " + e.what());
  }
  if (!header.is_object()) return invalid_argument(path + ": header JSON is not an object");

  SafetensorsFile out;
  out.file_ = file;
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return invalid_argument(path + ": '__metadata__' is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) return invalid_argument(path + ": '__metadata__." + m.key() + "' is not a string");
        out.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    TensorInfo info;
    uint64_t begin = 0, end = 0;
    JANUS_TRY(parse_entry(path, it.key(), it.value(), data_size, &info, &begin, &end));
    info.data = file->data() + data_start + begin;
    info.file = path;
    auto [pos, inserted] = out.tensors_.emplace(it.key(), std::move(info));
    (void)inserted;
    spans.push_back({begin, end, &pos->first});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].begin < spans[i - 1].end)
      return invalid_argument(path + ": tensors '" + *spans[i - 1].name + "' and '" + *spans[i].name + "' overlap (bytes [" +
                              std::to_string(spans[i].begin) + ", " + std::to_string(spans[i - 1].end) + ") are claimed twice)");
  }
  return out;
}

Result<Checkpoint> Checkpoint::open(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint ck;
  ck.dir_ = dir;
  const std::string single = (fs::path(dir) / "model.safetensors").string();
  const std::string index = (fs::path(dir) / "model.safetensors.index.json").string();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return not_found(dir + ": not a checkpoint directory");
  if (fs::exists(index, ec)) {
    std::ifstream in(index);
    if (!in) return io_error(index + ": cannot read");
    json idx;
    try {
      idx = json::parse(in);
    } catch (const json::exception& e) {
      return invalid_argument(index + ": malformed JSON: " + e.what());
    }
    if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
      return invalid_argument(index + ": no 'weight_map' object");
    std::map<std::string, std::vector<std::string>> by_file;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (!it.value().is_string()) return invalid_argument(index + ": weight_map['" + it.key() + "'] is not a file name");
      std::string f = it.value().get<std::string>();
      if (f.find('/') != std::string::npos || f == "..")
        return invalid_argument(index + ": weight_map['" + it.key() + "'] names '" + f + "' outside the checkpoint directory");
      by_file[f].push_back(it.key());
    }
    for (auto& [fname, names] : by_file) {
      JANUS_ASSIGN_OR_RETURN(SafetensorsFile sf, SafetensorsFile::open((fs::path(dir) / fname).string()));
      for (const std::string& n : names) {
        auto it = sf.tensors().find(n);
        if (it == sf.tensors().end())
          return invalid_argument(index + ": tensor '" + n + "' is listed in shard '" + fname + "' but that file does not hold it");
        ck.tensors_.emplace(n, it->second);
      }
      for (const auto& [n, info] : sf.tensors()) {
        auto li = idx["weight_map"].find(n);
        if (li == idx["weight_map"].end() || li->get<std::string>() != fname)
          return invalid_argument(sf.path() + ": holds tensor '" + n + "' that " + index + " does not list for this shard");
      }
      ck.files_.push_back(std::move(sf));
    }
    return ck;
  }
  if (!fs::exists(single, ec))
    return not_found(dir + ": neither model.safetensors nor model.safetensors.index.json is there");
  JANUS_ASSIGN_OR_RETURN(SafetensorsFile sf, SafetensorsFile::open(single));
  ck.tensors_ = sf.tensors();
  ck.files_.push_back(std::move(sf));
  return ck;
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> Checkpoint::files() const {
  std::vector<std::string> out;
  for (const auto& f : files_) out.push_back(std::filesystem::path(f.path()).filename().string());
  return out;
}

Status write_safetensors(const std::string& path, const std::vector<TensorSpec>& tensors,
                         const std::function<void(size_t, void*)>& fill, const std::map<std::string, std::string>& metadata,
                         const std::function<void(size_t, size_t)>& progress) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<uint64_t> offsets(tensors.size());
  uint64_t off = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec& t = tensors[i];
    uint64_t n = dtype_size(t.dtype);
    for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    offsets[i] = off;
    off += n;
  }
  std::string hdr = header.dump();
  while ((hdr.size() % 8) != 0) hdr.push_back(' ');  // keep the data region 8-byte aligned
  const uint64_t total = 8 + hdr.size() + off;

  const std::string tmp = path + ".partial";
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error(tmp + ": cannot create: " + std::strerror(errno));
  if (ftruncate(fd, static_cast<off_t>(total)) != 0) {
    int e = errno;
    ::close(fd);
    return io_error(tmp + ": cannot size to " + std::to_string(total) + " bytes: " + std::strerror(e));
  }
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    ::close(fd);
    return io_error(tmp + ": cannot mmap: " + std::strerror(e));
  }
  uint8_t* base = static_cast<uint8_t*>(p);
  uint64_t hl = hdr.size();
  for (int i = 0; i < 8; ++i) base[i] = static_cast<uint8_t>(hl >> (8 * i));
  std::memcpy(base + 8, hdr.data(), hdr.size());
  uint8_t* data = base + 8 + hdr.size();

  std::atomic<size_t> done{0};
  std::mutex progress_mu;
  parallel_for(static_cast<int64_t>(tensors.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      fill(static_cast<size_t>(i), data + offsets[i]);
      uint64_t n = (i + 1 < static_cast<int64_t>(tensors.size()) ? offsets[i + 1] : off) - offsets[i];
      size_t now = done.fetch_add(n) + n;
      if (progress) {
        std::lock_guard<std::mutex> lk(progress_mu);
        progress(now, off);
      }
    }
  });
  int rc = munmap(p, total);
  int rc2 = ::close(fd);
  if (rc != 0 || rc2 != 0) return io_error(tmp + ": write failed: " + std::strerror(errno));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return io_error(path + ": cannot rename into place: " + std::strerror(errno));
  return Status::Ok();
}

}  // namespace janus
