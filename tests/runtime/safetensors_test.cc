#include <doctest/doctest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/model/safetensors.h"
#include "test_util.h"

using namespace janus;
using janus::test::TempDir;

namespace {

// Builds raw safetensors bytes from a header JSON and a data region.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

std::string open_error(const std::string& path) {
  auto r = SafetensorsFile::open(path);
  REQUIRE_FALSE(r.ok());
  return r.status().to_string();
}

}  // namespace

TEST_CASE("write then read round-trips every dtype, memory-mapped") {
  TempDir dir;
  std::vector<TensorSpec> specs = {{"a", DType::kF32, {2, 3}}, {"b", DType::kBF16, {4}}, {"c", DType::kF16, {1, 1, 5}}};
  REQUIRE(write_safetensors(dir / "m.safetensors", specs, [&](size_t i, void* dst) {
            const size_t n = i == 0 ? 6 : i == 1 ? 4 : 5;
            std::vector<float> v(n);
            for (size_t k = 0; k < n; ++k) v[k] = 0.5f * static_cast<float>(k + 1) + static_cast<float>(i);
            convert_from_f32(v.data(), specs[i].dtype, dst, n);
          }, {{"format", "pt"}}).ok());
  auto f = SafetensorsFile::open(dir / "m.safetensors");
  REQUIRE(f.ok());
  CHECK(f->tensors().size() == 3);
  CHECK(f->metadata().at("format") == "pt");
  const TensorInfo& b = f->tensors().at("b");
  CHECK(b.dtype == DType::kBF16);
  CHECK(b.shape == std::vector<int64_t>{4});
  CHECK(load_as_f32(b.data, b.dtype, 3) == doctest::Approx(3.0f));
  const TensorInfo& c = f->tensors().at("c");
  CHECK(c.shape_string() == "[1, 1, 5]");
  CHECK(load_as_f32(c.data, c.dtype, 4) == doctest::Approx(4.5f));
  const TensorInfo& a = f->tensors().at("a");
  CHECK(load_as_f32(a.data, a.dtype, 5) == 3.0f);
}

TEST_CASE("a file shorter than the length prefix is refused") {
  TempDir dir;
  janus::test::write_file(dir / "t.safetensors", "abc");
  auto e = open_error(dir / "t.safetensors");
  CHECK(e.find("truncated") != std::string::npos);
  CHECK(e.find("t.safetensors") != std::string::npos);
}

TEST_CASE("a header length past the end of the file is refused") {
  TempDir dir;
  std::string f = raw_file(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd");
  f.resize(f.size() - 20);  // cut into the header
  janus::test::write_file(dir / "t.safetensors", f);
  CHECK(open_error(dir / "t.safetensors").find("runs past the end of the file") != std::string::npos);
}

TEST_CASE("malformed header JSON is refused with the parser's position") {
  TempDir dir;
  janus::test::write_file(dir / "t.safetensors", raw_file(R"({"x":{"dtype":"F32",)", ""));
  std::string e = open_error(dir / "t.safetensors");
  CHECK(e.find("malformed header JSON") != std::string::npos);
  CHECK(e.find("parse error") != std::string::npos);
}

TEST_CASE("data offsets past the end (a truncated data region) name the tensor") {
  TempDir dir;
  janus::test::write_file(dir / "t.safetensors",
                          raw_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, 'x')));
  std::string e = open_error(dir / "t.safetensors");
  CHECK(e.find("tensor 'w'") != std::string::npos);
  CHECK(e.find("run past the end") != std::string::npos);
}

TEST_CASE("overlapping tensors are refused") {
  TempDir dir;
  janus::test::write_file(dir / "t.safetensors",
                          raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                   std::string(12, 'x')));
  std::string e = open_error(dir / "t.safetensors");
  CHECK(e.find("overlap") != std::string::npos);
  CHECK(e.find("'a'") != std::string::npos);
  CHECK(e.find("'b'") != std::string::npos);
}

TEST_CASE("a byte size that disagrees with the shape is refused") {
  TempDir dir;
  janus::test::write_file(dir / "t.safetensors",
                          raw_file(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", std::string(8, 'x')));
  std::string e = open_error(dir / "t.safetensors");
  CHECK(e.find("holds 8 bytes but shape [3] of BF16 needs 6") != std::string::npos);
}

TEST_CASE("an unknown dtype is refused, naming it") {
  TempDir dir;
  janus::test::write_file(dir / "t.safetensors",
                          raw_file(R"({"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,4]}})", std::string(4, 'x')));
  std::string e = open_error(dir / "t.safetensors");
  CHECK(e.find("dtype 'Q4'") != std::string::npos);
}

TEST_CASE("header entries of the wrong form are refused") {
  TempDir dir;
  for (const char* h : {R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                        R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})",
                        R"({"w":{"shape":[1],"data_offsets":[0,4]}})", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})",
                        R"([1,2,3])", R"({"w":7})"}) {
    CAPTURE(h);
    janus::test::write_file(dir / "t.safetensors", raw_file(h, std::string(4, 'x')));
    auto r = SafetensorsFile::open(dir / "t.safetensors");
    CHECK_FALSE(r.ok());
    CHECK(r.status().code() == ErrorCode::kInvalidArgument);
  }
}

TEST_CASE("a missing directory or file is not_found") {
  auto r = Checkpoint::open("/nonexistent/janus/checkpoint");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == ErrorCode::kNotFound);
  TempDir dir;
  auto r2 = Checkpoint::open(dir.path());
  REQUIRE_FALSE(r2.ok());
  CHECK(r2.status().message().find("neither model.safetensors") != std::string::npos);
}

TEST_CASE("a sharded checkpoint is read through its index and checked against it") {
  TempDir dir;
  auto one = [](size_t, void* dst) { std::memset(dst, 0x3f, 4); };
  REQUIRE(write_safetensors(dir / "s1.safetensors", {{"a", DType::kF32, {1}}}, one).ok());
  REQUIRE(write_safetensors(dir / "s2.safetensors", {{"b", DType::kF32, {1}}, {"c", DType::kF32, {1}}}, one).ok());
  nlohmann::json idx = {{"metadata", {{"total_size", 12}}},
                        {"weight_map", {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}, {"c", "s2.safetensors"}}}};
  janus::test::write_file(dir / "model.safetensors.index.json", idx.dump());
  auto ck = Checkpoint::open(dir.path());
  REQUIRE(ck.ok());
  CHECK(ck->tensors().size() == 3);
  CHECK(ck->find("c") != nullptr);
  CHECK(ck->files().size() == 2);

  // The index names a tensor its shard does not hold.
  idx["weight_map"]["d"] = "s1.safetensors";
  janus::test::write_file(dir / "model.safetensors.index.json", idx.dump());
  auto bad = Checkpoint::open(dir.path());
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("'d' is listed in shard 's1.safetensors'") != std::string::npos);

  // A shard holds a tensor the index does not list.
  idx["weight_map"].erase("d");
  idx["weight_map"].erase("c");
  janus::test::write_file(dir / "model.safetensors.index.json", idx.dump());
  auto extra = Checkpoint::open(dir.path());
  REQUIRE_FALSE(extra.ok());
  CHECK(extra.status().message().find("holds tensor 'c'") != std::string::npos);

  janus::test::write_file(dir / "model.safetensors.index.json", "{\"weight_map\": ");
  auto broken = Checkpoint::open(dir.path());
  REQUIRE_FALSE(broken.ok());
  CHECK(broken.status().message().find("malformed JSON") != std::string::npos);
}
