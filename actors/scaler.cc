#include "actors/scaler.h"

namespace janus::actors {

Scaler::Scaler(caf::actor_config& cfg, std::shared_ptr<const DeploymentContext> ctx)
    : JanusActor(cfg, std::move(ctx), "scaler", "Scaler", "cpu") {}

caf::behavior Scaler::make_behavior() {
  set_down_handler([=, this](caf::down_msg& dm) { log_warn(stats_.name, "a member died: " + to_string(dm.reason)); });
  return with_stats({
      [=, this](InstallMembership& in) -> caf::result<uint32_t> {
        count();
        m_ = in.membership;
        epoch_ = m_.epoch;
        std::vector<caf::actor> members = {m_.frontend, m_.scheduler};
        members.insert(members.end(), m_.shards.begin(), m_.shards.end());
        members.insert(members.end(), m_.routers.begin(), m_.routers.end());
        members.insert(members.end(), m_.instances.begin(), m_.instances.end());
        auto rp = make_response_promise<uint32_t>();
        auto left = std::make_shared<size_t>(members.size());
        for (const caf::actor& a : members) {
          monitor(a);
          request(a, std::chrono::seconds(30), m_).then(
              [=, this]() mutable {
                if (--*left == 0) rp.deliver(m_.epoch);
              },
              [=, this](caf::error& e) mutable { rp.deliver(e); });
        }
        return rp;
      },
  });
}

}  // namespace janus::actors
