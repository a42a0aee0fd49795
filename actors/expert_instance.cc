#include "actors/expert_instance.h"

#include <algorithm>

namespace janus::actors {

ExpertInstance::ExpertInstance(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx, int id,
                               std::shared_ptr<ExpertBackend> backend)
    : JanusActor(cfg, ctx, "expert-" + std::to_string(id), "ExpertInstance", backend->device().name()),
      backend_(std::move(backend)) {}

Status ExpertInstance::keep(const Membership& next) {
  index_ = -1;
  for (size_t i = 0; i < next.instances.size(); ++i)
    if (next.instances[i] == caf::actor_cast<caf::actor>(this)) index_ = static_cast<int>(i);
  if (index_ < 0) return Status::Ok();
  return backend_->set_experts(next.layout->experts_on(index_));
}

caf::behavior ExpertInstance::make_behavior() {
  return member_behavior({
      [=, this](const LoadExperts& l) -> Status {
        count();
        Status s = timed("load", nullptr, [&] { return backend_->set_experts(l.experts); });
        return s.with_context(stats_.name);
      },
      [=, this](ExpertTask& t) {
        count();
        if (!current_epoch(t.key.epoch, "ExpertTask")) return;
        ExpertPartial out;
        out.key = t.key;
        out.instance = index_;
        // Work this instance cannot do is a scheduler bug, not data: refused as internal.
        if (index_ < 0) {
          out.error = internal_error("is not a member of epoch " + std::to_string(epoch_));
          send(membership_.scheduler, std::move(out));
          return;
        }
        const auto& mine = membership_.layout->experts_on(index_);
        if (t.routing.present()) {
          Status s = timed("experts", &t.key, [&] { return run_routed(t, mine, &out.partial); });
          if (!s.ok()) out.error = Status(s.code(), s.to_string());
          send(membership_.scheduler, std::move(out));
          return;
        }
        for (const ExpertWork& w : t.work)
          if (std::find(mine.begin(), mine.end(), w.expert) == mine.end()) {
            out.error = internal_error("was asked to run expert " + std::to_string(w.expert) + ", which it does not hold");
            break;
          }
        if (out.error.ok()) {
          Status s = timed("experts", &t.key, [&] { return backend_->run(t.key.layer, t.h, t.work, &out.partial); });
          // The backend's code travels; its message names the code too, as the requests
          // that fail by it report it.
          if (!s.ok()) out.error = Status(s.code(), s.to_string());
        }
        send(membership_.scheduler, std::move(out));
      },
  });
}

Status ExpertInstance::run_routed(const ExpertTask& t, const std::vector<int32_t>& mine, Tensor* partial) {
  if (backend_->runs_device_routing()) return backend_->run_routed(t.key.layer, t.h, t.routing, partial);
  // A backend that reads host work lists (the CPU beside a GPU router): its rows of the
  // routing's host copy, in (row, choice) order as the Scheduler would list them.
  JANUS_TRY(t.routing.wait_host());
  std::vector<bool> held(static_cast<size_t>(ctx_->model->config().num_experts), false);
  for (int32_t e : mine) held[static_cast<size_t>(e)] = true;
  std::vector<ExpertWork> work;
  const int32_t* ids = t.routing.host_ids();
  const float* w = t.routing.host_weights();
  for (int64_t i = 0; i < t.routing.choices(); ++i)
    if (ids[i] >= 0 && static_cast<size_t>(ids[i]) < held.size() && held[static_cast<size_t>(ids[i])])
      work.push_back({static_cast<int32_t>(i / t.routing.top_k), ids[i], w[i]});
  return backend_->run(t.key.layer, t.h, work, partial);
}

}  // namespace janus::actors
