// BridgeStaging: the bytes a bridge sends and the sums it makes, in host memory from the
// transport's registered BufferPool (transport/buffer_pool.h). Rows that live on a GPU are
// copied to the host first (copy_to_host); everything else is laid out or added in
// place, so a payload goes on the wire from the block it was staged in, and a payload
// that arrives is handed on as views of the block it landed in.
//
//   pack:      phase 1 of the attention side: the node's shards' rows (and their routing
//              under AGate) side by side in one block
//   reduce:    a MoE node: its instances' partial sums per shard row, in instance order
//   sum_nodes: Case 2's designated node: the MoE nodes' sums, in node order
//   stage:     single-phase: one instance's partial sums in a block of their own
//
// Sums are taken in the partials' own type (F64 on the CPU backends) in a fixed order,
// so Case 1 and Case 2 add the same numbers in the same order.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/messages.h"
#include "actors/wire_codec.h"
#include "transport/buffer_pool.h"

namespace janus::actors {

/// One MoE node's partial sums for the shards of one attention node, or a frame that
/// carries them: the payload and where each shard's rows are in it.
struct Contribution {
  std::shared_ptr<void> hold;
  const char* base = nullptr;
  uint64_t bytes = 0;
  std::vector<ExchangePart> parts;
  std::string error;
  uint64_t moe_ns = 0;

  const ExchangePart* part(int32_t shard) const;
};

/// The rows of section `s` of a payload at `base`, as a tensor that keeps `hold` alive
/// (no copy).
Tensor payload_view(const std::shared_ptr<void>& hold, const char* base, const PayloadSection& s, DType dt, int64_t rows,
                    int64_t cols);

class BridgeStaging {
 public:
  explicit BridgeStaging(transport::BufferPool& pool) : pool_(pool) {}

  /// Lays the shards' rows (and their routing under AGate) side by side in one block.
  Result<Contribution> pack(const std::vector<const ShardActivations*>& shards);

  /// This node's instances' partial sums for `shards` (an origin's, each in `results`),
  /// added per row in instance order into one payload. An error (a result's, a copy's)
  /// comes back in the contribution.
  Contribution reduce(const std::map<int32_t, MoeResult>& results, const std::vector<int32_t>& shards, uint64_t moe_ns);

  /// Case 2: the MoE nodes' contributions (`by_node`, one for each of `moe_nodes`) for
  /// `shards`, added in `moe_nodes` order into `out` (what Case 1's shard would add). On
  /// failure out->error says why.
  void sum_nodes(const std::map<uint32_t, Contribution>& by_node, const std::vector<int32_t>& shards,
                 const std::vector<uint32_t>& moe_nodes, Contribution* out);

  /// One tensor's rows for `shard`, copied into a block of their own (one part at offset 0).
  Result<Contribution> stage(int32_t shard, const Tensor& rows);

 private:
  transport::BufferPool& pool_;
};

}  // namespace janus::actors
