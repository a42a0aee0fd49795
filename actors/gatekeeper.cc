#include "actors/gatekeeper.h"

#include <algorithm>

#include "runtime/base/log.h"
#include "runtime/base/secret.h"

namespace janus::actors {

Gatekeeper::Gatekeeper(caf::actor_config& cfg, std::vector<std::string> names, std::string secret)
    : caf::event_based_actor(cfg), names_(std::move(names)), secret_(std::move(secret)) {}

void Gatekeeper::maybe_done() {
  if (joined_.size() < names_.size()) return;
  std::vector<JoinedNode> all;
  for (const std::string& n : names_) all.push_back(joined_.at(n));
  for (auto& rp : waiting_) rp.deliver(all);
  waiting_.clear();
}

caf::behavior Gatekeeper::make_behavior() {
  set_down_handler([=, this](caf::down_msg& dm) {
    for (auto it = joined_.begin(); it != joined_.end(); ++it)
      if (it->second.agent.address() == dm.source) {
        if (shutting_down_) return;
        const bool asked = dm.reason == caf::exit_reason::user_shutdown || !dm.reason;
        if (!asked) log_warn("gatekeeper", "node '" + it->first + "' went away (" + to_string(dm.reason) + ")");
        for (size_t i = 0; i < bridges_.size(); ++i)
          if (i != it->second.index && bridges_[i]) send(bridges_[i], NodeLost{it->second.index, to_string(dm.reason)});
        return;
      }
  });
  auto known = [=, this](const std::string& name) { return std::find(names_.begin(), names_.end(), name) != names_.end(); };
  auto all_names = [=, this] {
    std::string s;
    for (const auto& n : names_) s += (s.empty() ? "" : ", ") + n;
    return s;
  };
  return {
      [=, this](const NodeHello& h) -> caf::result<NodeChallenge> {
        if (!known(h.name))
          return caf::make_error(caf::sec::runtime_error,
                                 "this deployment declares no node named '" + h.name + "' (nodes: " + all_names() + ")");
        if (joined_.count(h.name)) return caf::make_error(caf::sec::runtime_error, "node '" + h.name + "' has already joined");
        NodeChallenge c{random_nonce()};
        nonces_[h.name] = c.nonce;
        return c;
      },
      [=, this](const NodeJoin& j) -> caf::result<NodeWelcome> {
        auto it = nonces_.find(j.name);
        if (it == nonces_.end())
          return caf::make_error(caf::sec::runtime_error, "node '" + j.name + "' joined without a challenge (send NodeHello first)");
        const std::string want = join_proof(secret_, j.name, it->second);
        nonces_.erase(it);  // one attempt per challenge
        if (!equal_constant_time(j.proof, want)) {
          ++refused_;
          log_warn("gatekeeper", "refused node '" + j.name + "' (pid " + std::to_string(j.pid) +
                                     "): authentication failed, wrong secret [" + std::to_string(refused_) + " refused so far]");
          return caf::make_error(caf::sec::runtime_error, "authentication failed: wrong secret for this deployment");
        }
        if (joined_.count(j.name)) return caf::make_error(caf::sec::runtime_error, "node '" + j.name + "' has already joined");
        const uint32_t index = static_cast<uint32_t>(std::find(names_.begin(), names_.end(), j.name) - names_.begin());
        joined_[j.name] = {j.name, index, j.agent, j.pid};
        monitor(j.agent);
        log_info("gatekeeper", "node '" + j.name + "' joined (pid " + std::to_string(j.pid) + ")");
        maybe_done();
        return NodeWelcome{index};
      },
      [=, this](WaitForNodes) -> caf::result<std::vector<JoinedNode>> {
        auto rp = make_response_promise<std::vector<JoinedNode>>();
        waiting_.push_back(rp);
        maybe_done();
        return rp;
      },
      [=, this](RefusedQuery) { return refused_; },
      [this](WatchNodes& w) { bridges_ = std::move(w.bridges); },
      [this](ShuttingDown) { shutting_down_ = true; },
      [this](MissingQuery) {
        MissingNodes missing;
        for (const auto& n : names_)
          if (!joined_.count(n)) missing.names.push_back(n);
        return missing;
      },
  };
}

}  // namespace janus::actors
