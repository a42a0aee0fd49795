#include "actors/expert_instance.h"

#include <algorithm>

namespace janus::actors {

ExpertInstance::ExpertInstance(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, int id,
                               std::shared_ptr<ExpertBackend> backend)
    : JanusActor(cfg, ctx, "expert-" + std::to_string(id), "ExpertInstance", backend->device().name()),
      backend_(std::move(backend)) {}

caf::behavior ExpertInstance::make_behavior() {
  return with_stats({
      [=, this](Membership& m) -> caf::result<void> {
        count();
        localize(m);
        m_ = m;
        epoch_ = m.epoch;
        index_ = -1;
        for (size_t i = 0; i < m_.instances.size(); ++i)
          if (m_.instances[i] == caf::actor_cast<caf::actor>(this)) index_ = static_cast<int>(i);
        if (index_ >= 0) {
          Status s = backend_->set_experts(m_.layout->experts_on(index_));
          if (!s.ok()) return caf::make_error(caf::sec::runtime_error, stats_.name + ": " + s.message());
        }
        return caf::unit;
      },
      [=, this](const LoadExperts& l) -> caf::result<void> {
        count();
        Status s = timed("load", nullptr, [&] { return backend_->set_experts(l.experts); });
        if (!s.ok()) return caf::make_error(caf::sec::runtime_error, stats_.name + ": " + s.message());
        return caf::unit;
      },
      [=, this](ExpertTask& t) {
        count();
        if (!current_epoch(t.key.epoch, "ExpertTask")) return;
        ExpertPartial out;
        out.key = t.key;
        out.instance = index_;
        if (index_ < 0) {
          out.error = "is not a member of epoch " + std::to_string(epoch_);
          send(m_.scheduler, std::move(out));
          return;
        }
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
