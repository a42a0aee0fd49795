#include "actors/wire_codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>

#include "schemas/descriptors.capnp.h"
#include "schemas/graph_spec.capnp.h"

namespace janus::actors {
namespace {

std::vector<char> to_bytes(capnp::MessageBuilder& mb) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  return std::vector<char>(bytes.begin(), bytes.end());
}

// FlatArrayMessageReader wants aligned words: copy the frame into a word array.
kj::Array<capnp::word> to_words(const std::vector<char>& bytes) {
  auto words = kj::heapArray<capnp::word>((bytes.size() + 7) / 8);
  std::memset(words.begin(), 0, words.size() * 8);
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  return words;
}

template <class F>
auto guarded(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const kj::Exception& e) {
    return invalid_argument(std::string("malformed ") + what + " frame: " + e.getDescription().cStr());
  }
}

wire::DType to_wire(DType d) {
  switch (d) {
    case DType::kF32: return wire::DType::F32;
    case DType::kBF16: return wire::DType::BF16;
    case DType::kF16: return wire::DType::F16;
    case DType::kF64: return wire::DType::F64;
  }
  return wire::DType::F32;
}

Result<DType> from_wire(wire::DType d) {
  switch (d) {
    case wire::DType::F32: return DType::kF32;
    case wire::DType::BF16: return DType::kBF16;
    case wire::DType::F16: return DType::kF16;
    case wire::DType::F64: return DType::kF64;
  }
  return invalid_argument("unknown dtype " + std::to_string(static_cast<int>(d)));
}

void set_key(wire::LayerBatchKey::Builder b, const LayerBatchKey& k) {
  b.setStep(k.step);
  b.setLayer(static_cast<uint16_t>(k.layer));
  b.setMicroBatch(static_cast<uint16_t>(k.micro_batch));
  b.setEpoch(k.epoch);
}

LayerBatchKey get_key(wire::LayerBatchKey::Reader r) {
  return {r.getStep(), r.getLayer(), r.getMicroBatch(), r.getEpoch()};
}

// capnp's list iterators lack the traits std::vector's range constructor wants.
template <class T, class L>
std::vector<T> to_vector(L list) {
  std::vector<T> out;
  out.reserve(list.size());
  for (auto x : list) out.push_back(x);
  return out;
}

template <class L>
void set_lists(L b, const std::vector<std::vector<int32_t>>& v) {
  for (size_t i = 0; i < v.size(); ++i) {
    auto e = b[static_cast<unsigned>(i)].initExperts(static_cast<unsigned>(v[i].size()));
    for (size_t j = 0; j < v[i].size(); ++j) e.set(static_cast<unsigned>(j), v[i][j]);
  }
}

template <class L>
std::vector<std::vector<int32_t>> get_lists(L r) {
  std::vector<std::vector<int32_t>> out;
  for (auto e : r) out.push_back(to_vector<int32_t>(e.getExperts()));
  return out;
}

template <class L>
void set_strings(L b, const std::vector<std::string>& v) {
  for (size_t i = 0; i < v.size(); ++i) b.set(static_cast<unsigned>(i), v[i]);
}

template <class L>
std::vector<std::string> get_strings(L r) {
  std::vector<std::string> out;
  for (auto s : r) out.emplace_back(s.cStr());
  return out;
}

}  // namespace

std::vector<char> encode_graph_spec(const GraphSpec& s) {
  capnp::MallocMessageBuilder mb;
  auto g = mb.initRoot<wire::GraphSpec>();
  g.setSource(s.source);
  auto m = g.initModel();
  m.setPath(s.model.path);
  m.setPreset(s.model.preset);
  m.setSeed(s.model.seed);
  m.setDtype(s.model.dtype);
  auto a = g.initAttention();
  a.setShards(static_cast<uint32_t>(s.attention.shards));
  set_strings(a.initDevices(static_cast<unsigned>(s.attention.devices.size())), s.attention.devices);
  a.setMicroBatches(static_cast<uint32_t>(s.attention.micro_batches));
  a.setMaxBatch(static_cast<uint32_t>(s.attention.max_batch));
  a.setKvBlocks(static_cast<uint32_t>(s.attention.kv_blocks));
  a.setBlockSize(static_cast<uint32_t>(s.attention.block_size));
  a.setMaxSeqLen(static_cast<uint32_t>(s.attention.max_seq_len));
  auto e = g.initExperts();
  e.setInstances(static_cast<uint32_t>(s.experts.instances));
  e.setSlots(static_cast<uint32_t>(s.experts.slots));
  set_strings(e.initDevices(static_cast<unsigned>(s.experts.devices.size())), s.experts.devices);
  e.setAutoPlacement(s.experts.auto_placement);
  set_lists(e.initPlacement(static_cast<unsigned>(s.experts.placement.size())), s.experts.placement);
  g.setRouterSide(s.router.side);
  g.setPolicy(s.scheduler.policy);
  g.setPolicySeed(s.scheduler.seed);
  auto w = g.initWorkload();
  auto prompts = w.initPrompts(static_cast<unsigned>(s.workload.prompts.size()));
  for (size_t i = 0; i < s.workload.prompts.size(); ++i) {
    auto p = prompts.init(static_cast<unsigned>(i), static_cast<unsigned>(s.workload.prompts[i].size()));
    for (size_t j = 0; j < s.workload.prompts[i].size(); ++j) p.set(static_cast<unsigned>(j), s.workload.prompts[i][j]);
  }
  w.setMaxNewTokens(static_cast<uint32_t>(s.workload.max_new_tokens));
  w.setTemperature(s.workload.temperature);
  w.setTopP(s.workload.top_p);
  w.setTopK(static_cast<uint32_t>(s.workload.top_k));
  w.setSeed(s.workload.seed);
  w.setIgnoreEos(s.workload.ignore_eos);
  g.setModelDir(s.model_dir);
  set_lists(g.initResolvedPlacement(static_cast<unsigned>(s.resolved_placement.size())), s.resolved_placement);
  return to_bytes(mb);
}

Result<GraphSpec> decode_graph_spec(const std::vector<char>& bytes) {
  return guarded("GraphSpec", [&]() -> Result<GraphSpec> {
    auto words = to_words(bytes);
    capnp::FlatArrayMessageReader reader(words.asPtr());
    auto g = reader.getRoot<wire::GraphSpec>();
    GraphSpec s;
    s.source = g.getSource().cStr();
    s.model.path = g.getModel().getPath().cStr();
    s.model.preset = g.getModel().getPreset().cStr();
    s.model.seed = g.getModel().getSeed();
    s.model.dtype = g.getModel().getDtype().cStr();
    auto a = g.getAttention();
    s.attention.shards = static_cast<int>(a.getShards());
    s.attention.devices = get_strings(a.getDevices());
    s.attention.micro_batches = static_cast<int>(a.getMicroBatches());
    s.attention.max_batch = static_cast<int>(a.getMaxBatch());
    s.attention.kv_blocks = static_cast<int>(a.getKvBlocks());
    s.attention.block_size = static_cast<int>(a.getBlockSize());
    s.attention.max_seq_len = static_cast<int>(a.getMaxSeqLen());
    auto e = g.getExperts();
    s.experts.instances = static_cast<int>(e.getInstances());
    s.experts.slots = static_cast<int>(e.getSlots());
    s.experts.devices = get_strings(e.getDevices());
    s.experts.auto_placement = e.getAutoPlacement();
    s.experts.placement = get_lists(e.getPlacement());
    s.router.side = g.getRouterSide().cStr();
    s.scheduler.policy = g.getPolicy().cStr();
    s.scheduler.seed = g.getPolicySeed();
    auto w = g.getWorkload();
    for (auto p : w.getPrompts()) s.workload.prompts.push_back(to_vector<int32_t>(p));
    s.workload.max_new_tokens = static_cast<int>(w.getMaxNewTokens());
    s.workload.temperature = w.getTemperature();
    s.workload.top_p = w.getTopP();
    s.workload.top_k = static_cast<int>(w.getTopK());
    s.workload.seed = w.getSeed();
    s.workload.ignore_eos = w.getIgnoreEos();
    s.model_dir = g.getModelDir().cStr();
    s.resolved_placement = get_lists(g.getResolvedPlacement());
    return s;
  });
}

TensorDescriptor describe(const Tensor& t, uint64_t tag) {
  return {t.dtype, static_cast<uint32_t>(t.rows), static_cast<uint32_t>(t.cols), t.bytes(), tag};
}

std::vector<char> encode_shard_activations(const ShardActivations& a, uint64_t tag) {
  capnp::MallocMessageBuilder mb;
  auto f = mb.initRoot<wire::ShardActivations>();
  set_key(f.initKey(), a.key);
  f.setShard(static_cast<uint16_t>(a.shard));
  auto t = f.initActivations();
  const TensorDescriptor d = describe(a.h, tag);
  t.setDtype(to_wire(d.dtype));
  t.setRows(d.rows);
  t.setCols(d.cols);
  t.setBytes(d.bytes);
  t.setTransferTag(d.transfer_tag);
  auto ids = f.initTopkIds(static_cast<unsigned>(a.topk_ids.size()));
  for (size_t i = 0; i < a.topk_ids.size(); ++i) ids.set(static_cast<unsigned>(i), a.topk_ids[i]);
  auto w = f.initTopkWeights(static_cast<unsigned>(a.topk_weights.size()));
  for (size_t i = 0; i < a.topk_weights.size(); ++i) w.set(static_cast<unsigned>(i), a.topk_weights[i]);
  return to_bytes(mb);
}

Result<ShardActivationsFrame> decode_shard_activations(const std::vector<char>& bytes, int shards, int top_k) {
  if (bytes.size() < 8 || bytes.size() % 8 != 0)
    return invalid_argument("malformed ShardActivations frame: " + std::to_string(bytes.size()) + " bytes is not a whole number of words");
  return guarded("ShardActivations", [&]() -> Result<ShardActivationsFrame> {
    auto words = to_words(bytes);
    capnp::FlatArrayMessageReader reader(words.asPtr());
    auto f = reader.getRoot<wire::ShardActivations>();
    ShardActivationsFrame out;
    out.key = get_key(f.getKey());
    out.shard = f.getShard();
    if (out.shard >= shards)
      return invalid_argument("ShardActivations from shard " + std::to_string(out.shard) + ", but the graph has " +
                              std::to_string(shards) + " shards");
    auto t = f.getActivations();
    JANUS_ASSIGN_OR_RETURN(out.activations.dtype, from_wire(t.getDtype()));
    out.activations.rows = t.getRows();
    out.activations.cols = t.getCols();
    out.activations.bytes = t.getBytes();
    out.activations.transfer_tag = t.getTransferTag();
    const uint64_t want = static_cast<uint64_t>(out.activations.rows) * out.activations.cols * dtype_size(out.activations.dtype);
    if (want != out.activations.bytes)
      return invalid_argument("ShardActivations for " + out.key.to_string() + ": the payload is said to be " +
                              std::to_string(out.activations.bytes) + " bytes but [" + std::to_string(out.activations.rows) + ", " +
                              std::to_string(out.activations.cols) + "] needs " + std::to_string(want));
    out.topk_ids = to_vector<int32_t>(f.getTopkIds());
    out.topk_weights = to_vector<float>(f.getTopkWeights());
    if (!out.topk_ids.empty() &&
        (out.topk_ids.size() != static_cast<size_t>(out.activations.rows) * static_cast<size_t>(top_k) ||
         out.topk_weights.size() != out.topk_ids.size()))
      return invalid_argument("ShardActivations for " + out.key.to_string() + ": routing has " + std::to_string(out.topk_ids.size()) +
                              " ids for " + std::to_string(out.activations.rows) + " rows of top-" + std::to_string(top_k));
    return out;
  });
}

}  // namespace janus::actors
