#include "actors/actor_common.h"

#include <chrono>
#include <thread>

namespace janus::actors {

BackendOptions backend_options(const GraphSpec& spec, const ModelConfig& c) {
  BackendOptions bo;
  bo.kv.layers = c.num_layers;
  bo.kv.kv_heads = c.kv_cache_heads();
  bo.kv.head_dim = c.kv_cache_head_dim();
  bo.kv.values = c.kv_cache_values();
  bo.kv.block_size = spec.attention.block_size;
  bo.kv.num_blocks = spec.attention.kv_blocks;
  bo.kv.max_seqs = spec.attention.max_batch;
  bo.kv.max_seq_len = spec.attention.max_seq_len;
  return bo;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string LayerBatchKey::to_string() const {
  return "step " + std::to_string(step) + " layer " + std::to_string(layer) + " mb " + std::to_string(micro_batch) + " epoch " +
         std::to_string(epoch);
}

JanusActor::JanusActor(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, std::string name, std::string kind,
                       std::string device)
    : caf::event_based_actor(cfg), ctx_(std::move(ctx)) {
  stats_.name = std::move(name);
  stats_.kind = std::move(kind);
  stats_.device = std::move(device);
  started_s_ = now_seconds();
}

void JanusActor::count() {
  ++stats_.messages;
  // A slowed actor really holds its thread, as a straggling device would hold its stream.
  if (stats_.slow_ms > 0) std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(stats_.slow_ms));
}

void JanusActor::drop(const char* what, const std::string& why) {
  ++stats_.dropped;
  log_warn(stats_.name, std::string("dropped ") + what + " " + why);
}

bool JanusActor::current_epoch(uint32_t epoch, const char* what) {
  if (epoch == epoch_) return true;
  drop(what, "of epoch " + std::to_string(epoch) + " (current epoch " + std::to_string(epoch_) + ")");
  return false;
}

Status JanusActor::keep(const Membership&) { return Status::Ok(); }

Status JanusActor::adopt(Membership next) {
  if (next.epoch < epoch_) {
    // The Frontend installs epochs in order: an older one arriving now is stale, and
    // applying it would undo the newer membership.
    drop("Membership", "of epoch " + std::to_string(next.epoch) + " (current epoch " + std::to_string(epoch_) + ")");
    return invalid_argument(stats_.name + ": membership of epoch " + std::to_string(next.epoch) + " is older than epoch " +
                            std::to_string(epoch_));
  }
  if (ctx_->view) ctx_->view->localize(next);
  Status kept = keep(next);
  membership_ = std::move(next);
  epoch_ = membership_.epoch;
  return kept.with_context(stats_.name);
}

caf::behavior JanusActor::member_behavior(caf::message_handler handlers) {
  return with_stats(handlers.or_else([=, this](Membership& m) -> caf::result<void> {
    count();
    Status s = adopt(std::move(m));
    if (!s.ok()) return caf::make_error(caf::sec::runtime_error, s.message());
    return caf::unit;
  }));
}

caf::behavior JanusActor::with_stats(caf::message_handler handlers) {
  return handlers.or_else(
      [=, this](StatsQuery) {
        ActorStats s = stats_;
        s.mailbox = mailbox().size();
        s.alive_s = now_seconds() - started_s_;
        return s;
      },
      [=, this](SlowDown d) {
        stats_.slow_ms = d.ms;
        log_info(stats_.name, "slowed down by " + std::to_string(d.ms) + " ms per message");
      });
}

void JanusActor::finish_span(const char* what, const LayerBatchKey* key, double t0) {
  const double t1 = now_seconds();
  stats_.busy_s += t1 - t0;
  if (ctx_->trace != nullptr && ctx_->trace->enabled()) {
    TraceSpan s;
    s.actor = stats_.name;
    s.what = what;
    if (key != nullptr) {
      s.step = key->step;
      s.layer = key->layer;
      s.micro_batch = key->micro_batch;
    }
    s.start_s = t0;
    s.end_s = t1;
    ctx_->trace->record(std::move(s));
  }
}

}  // namespace janus::actors
