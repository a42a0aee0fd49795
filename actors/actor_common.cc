#include "actors/actor_common.h"

#include <chrono>

namespace janus::actors {

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
}

bool JanusActor::current_epoch(uint32_t epoch, const char* what) {
  if (epoch == epoch_) return true;
  ++stats_.dropped;
  log_warn(stats_.name, std::string("dropped ") + what + " of epoch " + std::to_string(epoch) + " (current epoch " +
                            std::to_string(epoch_) + ")");
  return false;
}

caf::behavior JanusActor::with_stats(caf::message_handler handlers) {
  return handlers.or_else([=, this](StatsQuery) { return stats_; });
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
