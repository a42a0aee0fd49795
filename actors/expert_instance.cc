#include "actors/expert_instance.h"

#include <algorithm>

namespace janus::actors {

ExpertInstance::ExpertInstance(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, int index,
                               std::shared_ptr<ExpertBackend> backend)
    : JanusActor(cfg, ctx, "expert-" + std::to_string(index), "ExpertInstance", backend->device().name()),
      index_(index),
      backend_(std::move(backend)) {}

caf::behavior ExpertInstance::make_behavior() {
  return with_stats({
      [=, this](Membership& m) {
        count();
        m_ = m;
        epoch_ = m.epoch;
      },
      [=, this](ExpertTask& t) {
        count();
        if (!current_epoch(t.key.epoch, "ExpertTask")) return;
        ExpertPartial out;
        out.key = t.key;
        out.instance = index_;
        // Refuse work for experts this instance does not hold: a scheduler bug, not data.
        const auto& mine = m_.layout->experts_on(index_);
        for (const ExpertWork& w : t.work)
          if (std::find(mine.begin(), mine.end(), w.expert) == mine.end()) {
            out.error = "was asked to run expert " + std::to_string(w.expert) + ", which it does not hold";
            break;
          }
        if (out.error.empty()) {
          Status s = timed("experts", &t.key, [&] { return backend_->run(t.key.layer, t.h, t.work, &out.partial); });
          if (!s.ok()) out.error = s.to_string();
        }
        send(m_.scheduler, std::move(out));
      },
  });
}

}  // namespace janus::actors
