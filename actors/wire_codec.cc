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
  set_strings(a.initNodes(static_cast<unsigned>(s.attention.nodes.size())), s.attention.nodes);
  auto e = g.initExperts();
  e.setInstances(static_cast<uint32_t>(s.experts.instances));
  e.setSlots(static_cast<uint32_t>(s.experts.slots));
  set_strings(e.initDevices(static_cast<unsigned>(s.experts.devices.size())), s.experts.devices);
  e.setAutoPlacement(s.experts.auto_placement);
  set_lists(e.initPlacement(static_cast<unsigned>(s.experts.placement.size())), s.experts.placement);
  set_strings(e.initNodes(static_cast<unsigned>(s.experts.nodes.size())), s.experts.nodes);
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
  auto nodes = g.initNodes(static_cast<unsigned>(s.nodes.size()));
  for (size_t i = 0; i < s.nodes.size(); ++i) {
    nodes[static_cast<unsigned>(i)].setName(s.nodes[i].name);
    nodes[static_cast<unsigned>(i)].setHost(s.nodes[i].host);
  }
  auto x = g.initExchange();
  x.setMode(s.exchange.mode);
  x.setTransport(s.exchange.transport);
  x.setSpinUs(static_cast<uint32_t>(s.exchange.spin_us));
  x.setProbe(s.exchange.probe);
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
    s.attention.nodes = get_strings(a.getNodes());
    auto e = g.getExperts();
    s.experts.instances = static_cast<int>(e.getInstances());
    s.experts.slots = static_cast<int>(e.getSlots());
    s.experts.devices = get_strings(e.getDevices());
    s.experts.auto_placement = e.getAutoPlacement();
    s.experts.placement = get_lists(e.getPlacement());
    s.experts.nodes = get_strings(e.getNodes());
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
    for (auto n : g.getNodes()) {
      NodeSpec node;
      node.name = n.getName().cStr();
      node.host = n.getHost().cStr();
      s.nodes.push_back(std::move(node));
    }
    if (g.hasExchange()) {
      auto x = g.getExchange();
      s.exchange.mode = x.getMode().cStr();
      s.exchange.transport = x.getTransport().cStr();
      s.exchange.spin_us = static_cast<int>(x.getSpinUs());
      s.exchange.probe = x.getProbe();
    }
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

// -- the node-to-node exchange ------------------------------------------------------------

namespace janus::actors {

const char* frame_fault_name(FrameFault f) {
  switch (f) {
    case FrameFault::kTruncated: return "truncated";
    case FrameFault::kMalformed: return "malformed";
    case FrameFault::kWrongEpoch: return "wrong epoch";
    case FrameFault::kSizeMismatch: return "size mismatch";
    case FrameFault::kUnknownSender: return "unknown sender";
  }
  return "?";
}

namespace {

void set_section(wire::PayloadSection::Builder b, const PayloadSection& s) {
  b.setOffset(s.offset);
  b.setBytes(s.bytes);
}

PayloadSection get_section(wire::PayloadSection::Reader r) { return {r.getOffset(), r.getBytes()}; }

}  // namespace

std::vector<char> encode_exchange_frame(const ExchangeFrame& f) {
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<wire::ExchangeFrame>();
  set_key(b.initKey(), f.key);
  b.setKind(static_cast<wire::ExchangeKind>(f.kind));
  b.setMode(static_cast<wire::ExchangeMode>(f.mode));
  b.setSender(static_cast<uint16_t>(f.sender));
  b.setOrigin(static_cast<uint16_t>(f.origin));
  b.setDesignated(static_cast<uint16_t>(f.designated));
  auto parts = b.initParts(static_cast<unsigned>(f.parts.size()));
  for (size_t i = 0; i < f.parts.size(); ++i) {
    const ExchangePart& p = f.parts[i];
    auto q = parts[static_cast<unsigned>(i)];
    q.setShard(static_cast<uint16_t>(p.shard));
    q.setRows(p.rows);
    q.setDtype(to_wire(p.dtype));
    q.setHasH(p.has_h);
    set_section(q.initH(), p.h);
    set_section(q.initTopkIds(), p.topk_ids);
    set_section(q.initTopkWeights(), p.topk_weights);
    q.setInstance(p.instance);
    q.setPart(p.part);
    q.setPartsTotal(p.parts_total);
  }
  b.setPayloadBytes(f.payload_bytes);
  b.setTransferTag(f.transfer_tag);
  if (f.inline_bytes > 0)
    b.setInline(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(f.inline_data), f.inline_bytes));
  if (!f.error.empty()) b.setError(f.error);
  b.setMoeBusyNs(f.moe_busy_ns);
  b.setProbeSeq(f.probe_seq);
  return to_bytes(mb);
}

Result<ExchangeFrame> decode_exchange_frame(const void* bytes, size_t len, const ExchangeLimits& lim, FrameFault* fault) {
  auto refuse = [&](FrameFault why, const std::string& m) -> Status {
    *fault = why;
    return invalid_argument(m);
  };
  if (len < 8) return refuse(FrameFault::kTruncated, "exchange frame of " + std::to_string(len) + " bytes (a frame is at least one word)");
  if (len % 8 != 0) return refuse(FrameFault::kMalformed, "exchange frame of " + std::to_string(len) + " bytes is not a whole number of words");
  // Received buffers are word aligned: read them in place; anything else is copied.
  kj::Array<capnp::word> copy;
  kj::ArrayPtr<const capnp::word> words;
  if (reinterpret_cast<uintptr_t>(bytes) % alignof(capnp::word) == 0) {
    words = kj::arrayPtr(static_cast<const capnp::word*>(bytes), len / 8);
  } else {
    copy = kj::heapArray<capnp::word>(len / 8);
    std::memcpy(copy.begin(), bytes, len);
    words = copy.asPtr();
  }
  try {
    const size_t want = capnp::expectedSizeInWordsFromPrefix(words);
    if (want > words.size())
      return refuse(FrameFault::kTruncated, "exchange frame says " + std::to_string(want * 8) + " bytes, " + std::to_string(len) + " arrived");
    capnp::FlatArrayMessageReader reader(words);
    auto r = reader.getRoot<wire::ExchangeFrame>();
    ExchangeFrame f;
    f.key = get_key(r.getKey());
    const auto kind = static_cast<uint16_t>(r.getKind()), mode = static_cast<uint16_t>(r.getMode());
    if (kind > static_cast<uint16_t>(ExchangeKind::kProbeReply)) return refuse(FrameFault::kMalformed, "exchange frame of unknown kind " + std::to_string(kind));
    if (mode > static_cast<uint16_t>(ExchangeMode::kCase2)) return refuse(FrameFault::kMalformed, "exchange frame of unknown mode " + std::to_string(mode));
    f.kind = static_cast<ExchangeKind>(kind);
    f.mode = static_cast<ExchangeMode>(mode);
    f.sender = r.getSender();
    f.origin = r.getOrigin();
    f.designated = r.getDesignated();
    if (f.sender >= static_cast<uint32_t>(lim.nodes))
      return refuse(FrameFault::kUnknownSender, "exchange frame from node " + std::to_string(f.sender) + ", the deployment has " + std::to_string(lim.nodes));
    if (f.origin >= static_cast<uint32_t>(lim.nodes) || f.designated >= static_cast<uint32_t>(lim.nodes))
      return refuse(FrameFault::kMalformed, "exchange frame names node " + std::to_string(std::max(f.origin, f.designated)) +
                                                ", the deployment has " + std::to_string(lim.nodes));
    f.payload_bytes = r.getPayloadBytes();
    f.transfer_tag = r.getTransferTag();
    f.moe_busy_ns = r.getMoeBusyNs();
    f.probe_seq = r.getProbeSeq();
    f.error = r.getError().cStr();
    if (r.hasInline()) {
      auto d = r.getInline();
      f.inline_data = reinterpret_cast<const char*>(d.begin());
      f.inline_bytes = d.size();
    }
    const std::string what = "exchange frame for " + f.key.to_string();
    if (f.payload_bytes > lim.max_payload)
      return refuse(FrameFault::kSizeMismatch, what + ": a payload of " + std::to_string(f.payload_bytes) + " bytes is over the limit");
    if (f.inline_bytes > 0 && (f.inline_bytes != f.payload_bytes || f.transfer_tag != 0))
      return refuse(FrameFault::kSizeMismatch, what + ": inline payload of " + std::to_string(f.inline_bytes) + " bytes, the frame says " +
                                                   std::to_string(f.payload_bytes));
    if (f.inline_bytes == 0 && f.payload_bytes > 0 && (f.transfer_tag == 0 || f.transfer_tag >= (uint64_t{1} << 62)))
      return refuse(FrameFault::kMalformed, what + ": a payload without a valid transfer tag");
    // Every section inside the payload, 8-byte aligned, sized by rows x columns x dtype.
    auto inside = [&](const PayloadSection& s) {
      return s.offset % 8 == 0 && s.offset <= f.payload_bytes && s.bytes <= f.payload_bytes - s.offset;
    };
    // A list of empty structs costs its sender nothing (a 120-byte frame claimed 819,202
    // parts): no frame carries more than one part per (shard, instance or none).
    const auto parts = r.getParts();
    const uint64_t max_parts = static_cast<uint64_t>(std::max(lim.shards, 1)) * static_cast<uint64_t>(std::max(lim.instances, 0) + 1);
    if (parts.size() > max_parts)
      return refuse(FrameFault::kMalformed, what + ": " + std::to_string(parts.size()) + " parts, more than the " +
                                                std::to_string(max_parts) + " the graph can have");
    for (auto q : parts) {
      ExchangePart p;
      p.shard = q.getShard();
      p.rows = q.getRows();
      auto dt = from_wire(q.getDtype());
      if (!dt.ok()) return refuse(FrameFault::kMalformed, what + ": " + dt.status().message());
      p.dtype = *dt;
      p.has_h = q.getHasH();
      p.h = get_section(q.getH());
      p.topk_ids = get_section(q.getTopkIds());
      p.topk_weights = get_section(q.getTopkWeights());
      p.instance = q.getInstance();
      p.part = q.getPart();
      p.parts_total = q.getPartsTotal();
      if (p.shard >= lim.shards)
        return refuse(FrameFault::kMalformed, what + ": shard " + std::to_string(p.shard) + ", the graph has " + std::to_string(lim.shards));
      if (p.instance < -1 || p.instance >= lim.instances)
        return refuse(FrameFault::kMalformed, what + ": instance " + std::to_string(p.instance) + ", the graph has " + std::to_string(lim.instances));
      const bool partial = f.kind == ExchangeKind::kCombine;
      if ((partial && p.dtype != DType::kF64 && p.dtype != DType::kF32) || (!partial && p.dtype == DType::kF64))
        return refuse(FrameFault::kMalformed, what + ": " + std::string(partial ? "partial sums" : "activations") + " of dtype " +
                                                  dtype_name(p.dtype));
      if (p.rows > (1u << 24)) return refuse(FrameFault::kMalformed, what + ": " + std::to_string(p.rows) + " rows");
      const uint64_t h_bytes = static_cast<uint64_t>(p.rows) * static_cast<uint64_t>(lim.hidden) * dtype_size(p.dtype);
      if (p.has_h && (p.h.bytes != h_bytes || !inside(p.h)))
        return refuse(FrameFault::kSizeMismatch, what + ": shard " + std::to_string(p.shard) + "'s rows are said to be " +
                                                     std::to_string(p.h.bytes) + " bytes at offset " + std::to_string(p.h.offset) + ", [" +
                                                     std::to_string(p.rows) + ", " + std::to_string(lim.hidden) + "] " + dtype_name(p.dtype) +
                                                     " needs " + std::to_string(h_bytes) + " inside a payload of " +
                                                     std::to_string(f.payload_bytes));
      if (!p.has_h && p.rows > 0 && !partial)
        return refuse(FrameFault::kMalformed, what + ": shard " + std::to_string(p.shard) + " has rows but no activations");
      const uint64_t route_bytes = static_cast<uint64_t>(p.rows) * static_cast<uint64_t>(lim.top_k) * 4;
      const bool routed = p.topk_ids.bytes != 0 || p.topk_weights.bytes != 0;
      if (routed && (p.topk_ids.bytes != route_bytes || p.topk_weights.bytes != route_bytes || !inside(p.topk_ids) ||
                     !inside(p.topk_weights)))
        return refuse(FrameFault::kSizeMismatch, what + ": shard " + std::to_string(p.shard) + "'s routing is " +
                                                     std::to_string(p.topk_ids.bytes) + " + " + std::to_string(p.topk_weights.bytes) +
                                                     " bytes, " + std::to_string(p.rows) + " rows of top-" + std::to_string(lim.top_k) +
                                                     " need " + std::to_string(route_bytes) + " each");
      f.parts.push_back(p);
    }
    return f;
  } catch (const kj::Exception& e) {
    return refuse(FrameFault::kMalformed, std::string("malformed exchange frame: ") + e.getDescription().cStr());
  }
}

}  // namespace janus::actors
