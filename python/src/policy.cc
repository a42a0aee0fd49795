// Scheduling policies written in Python (@janus.policy): a SchedulingPolicy whose assign()
// takes the GIL on the Scheduler's runtime thread and calls the function with the layer
// batch's routing and the replica layout. register_scheduling_policy's check of every
// answer (runtime/scheduling/scheduling_policy.h) stands between it and the Scheduler; a
// policy that raises fails the layer batch with the traceback.
#include <chrono>
#include <map>
#include <mutex>
#include <set>

#include "python/src/bindings.h"
#include "python/src/common.h"
#include "runtime/scheduling/scheduling_policy.h"

namespace janus::python {

namespace {

// The layout as a policy sees it: read-only, with NumPy tables for vectorised policies.
struct ReplicaLayout {
  ExpertLayout layout;
  py::array_t<int32_t> replica_expert, replica_instance, primary;

  explicit ReplicaLayout(ExpertLayout l) : layout(std::move(l)) {
    const int R = layout.num_replicas(), E = layout.num_experts();
    replica_expert = py::array_t<int32_t>(R);
    replica_instance = py::array_t<int32_t>(R);
    primary = py::array_t<int32_t>(E);
    for (int r = 0; r < R; ++r) {
      replica_expert.mutable_data()[r] = layout.expert_of(r);
      replica_instance.mutable_data()[r] = layout.instance_of(r);
    }
    for (int e = 0; e < E; ++e) primary.mutable_data()[e] = layout.replicas_of(e).front();
    for (auto* a : {&replica_expert, &replica_instance, &primary}) a->attr("setflags")(py::arg("write") = false);
  }
};

std::mutex g_cost_mu;
struct Cost {
  uint64_t calls = 0;
  double seconds = 0;
};
std::map<std::string, Cost> g_cost;  // per policy: calls and time inside Python
std::set<std::string> g_python_policies;

class PythonPolicy final : public SchedulingPolicy {
 public:
  PythonPolicy(std::string name, std::shared_ptr<PyRef> fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  ~PythonPolicy() override {
    if (layout_obj_) layout_obj_->reset();
  }
  std::string name() const override { return name_; }

  Status assign(const ExpertLayout& layout, const int32_t* ids, int64_t tokens, int k, uint64_t batch_id, int32_t* out) override {
    if (!interpreter_alive()) return unavailable("scheduling policy '" + name_ + "': the Python interpreter is shutting down");
    const auto t0 = std::chrono::steady_clock::now();
    py::gil_scoped_acquire gil;
    Status s = call(layout, ids, tokens, k, batch_id, out);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::lock_guard<std::mutex> lk(g_cost_mu);
    Cost& c = g_cost[name_];
    ++c.calls;
    c.seconds += dt;
    return s;
  }

 private:
  Status call(const ExpertLayout& layout, const int32_t* ids, int64_t tokens, int k, uint64_t batch_id, int32_t* out) {
    try {
      if (!layout_obj_ || layout.placement() != placement_ || layout.num_experts() != experts_) {
        placement_ = layout.placement();
        experts_ = layout.num_experts();
        if (!layout_obj_) layout_obj_ = std::make_unique<PyRef>();
        layout_obj_->set(py::cast(ReplicaLayout(layout)));
      }
      py::array_t<int32_t> routing({static_cast<py::ssize_t>(tokens), static_cast<py::ssize_t>(k)});
      std::copy(ids, ids + tokens * k, routing.mutable_data());
      py::object answer = fn_->get()(routing, layout_obj_->get(), batch_id);
      if (answer.is_none()) return invalid_argument("scheduling policy '" + name_ + "' returned None, not an array of replica ids");
      py::array a = py::array::ensure(answer);
      if (!a) return invalid_argument("scheduling policy '" + name_ + "' returned " + py::repr(py::type::of(answer)).cast<std::string>() + ", not an array of replica ids");
      if (a.dtype().kind() != 'i' && a.dtype().kind() != 'u')
        return invalid_argument("scheduling policy '" + name_ + "' returned an array of dtype " + py::str(a.dtype()).cast<std::string>() +
                                ", not integers (replica ids)");
      if (a.ndim() != 2 || a.shape(0) != tokens || a.shape(1) != k) {
        std::string shape;
        for (py::ssize_t d = 0; d < a.ndim(); ++d) shape += (d ? ", " : "") + std::to_string(a.shape(d));
        return invalid_argument("scheduling policy '" + name_ + "' returned an array of shape (" + shape + "), not (" +
                                std::to_string(tokens) + ", " + std::to_string(k) + ") (tokens x top-k)");
      }
      auto r = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
      const int64_t* v = r.data();
      for (int64_t c = 0; c < tokens * k; ++c) {
        if (v[c] < INT32_MIN || v[c] > INT32_MAX)
          return invalid_argument("scheduling policy '" + name_ + "': choice " + std::to_string(c) + " got replica " + std::to_string(v[c]) +
                                  ", outside [0, " + std::to_string(layout.num_replicas()) + ")");
        out[c] = static_cast<int32_t>(v[c]);
      }
      return Status::Ok();
    } catch (py::error_already_set& e) {
      return invalid_argument("scheduling policy '" + name_ + "' raised:\n" + format_python_error(e));
    } catch (std::exception& e) {
      return invalid_argument("scheduling policy '" + name_ + "': " + e.what());
    }
  }

  std::string name_;
  std::shared_ptr<PyRef> fn_;
  std::unique_ptr<PyRef> layout_obj_;
  std::vector<std::vector<int32_t>> placement_;
  int experts_ = 0;
};

}  // namespace

void unregister_python_policies() {
  std::set<std::string> names;
  {
    std::lock_guard<std::mutex> lk(g_cost_mu);
    names.swap(g_python_policies);
  }
  for (const std::string& n : names) unregister_scheduling_policy(n);
}

void bind_policy(py::module_& m) {
  py::class_<ReplicaLayout>(m, "ReplicaLayout",
                            "Where the expert replicas live, as a scheduling policy sees it: num_instances instances of "
                            "`slots` slots; replica ids number the filled slots instance-major. replica_expert[r] and "
                            "replica_instance[r] say what replica r holds and where; primary[e] is expert e's first replica.")
      .def_property_readonly("num_experts", [](const ReplicaLayout& l) { return l.layout.num_experts(); })
      .def_property_readonly("num_instances", [](const ReplicaLayout& l) { return l.layout.num_instances(); })
      .def_property_readonly("slots", [](const ReplicaLayout& l) { return l.layout.slots(); })
      .def_property_readonly("num_replicas", [](const ReplicaLayout& l) { return l.layout.num_replicas(); })
      .def_property_readonly("placement", [](const ReplicaLayout& l) { return l.layout.placement(); })
      .def_readonly("replica_expert", &ReplicaLayout::replica_expert)
      .def_readonly("replica_instance", &ReplicaLayout::replica_instance)
      .def_readonly("primary", &ReplicaLayout::primary)
      .def("replicas_of", [](const ReplicaLayout& l, int e) {
        if (e < 0 || e >= l.layout.num_experts()) raise(invalid_argument("expert " + std::to_string(e) + " outside [0, " + std::to_string(l.layout.num_experts()) + ")"));
        return l.layout.replicas_of(e);
      }, py::arg("expert"))
      .def("replica_on", [](const ReplicaLayout& l, int e, int i) { return l.layout.replica_on(e, i); }, py::arg("expert"), py::arg("instance"))
      .def("__repr__", [](const ReplicaLayout& l) { return "ReplicaLayout(" + l.layout.to_string() + ")"; });

  m.def("register_policy", [](const std::string& name, py::function fn) {
    auto ref = std::make_shared<PyRef>(std::move(fn));
    check(register_scheduling_policy(name, [name, ref](uint64_t) -> Result<std::unique_ptr<SchedulingPolicy>> {
      return std::unique_ptr<SchedulingPolicy>(new PythonPolicy(name, ref));
    }));
    std::lock_guard<std::mutex> lk(g_cost_mu);
    g_python_policies.insert(name);
    g_cost.erase(name);
  }, py::arg("name"), py::arg("fn"));
  m.def("unregister_policy", [](const std::string& name) {
    {
      std::lock_guard<std::mutex> lk(g_cost_mu);
      g_python_policies.erase(name);
    }
    return unregister_scheduling_policy(name);
  }, py::arg("name"));
  m.def("policy_names", &known_scheduling_policy_names);
  m.def("builtin_policy_names", &scheduling_policy_names);
  m.def("policy_cost", [](const std::string& name) {
    std::lock_guard<std::mutex> lk(g_cost_mu);
    py::dict d;
    Cost c = g_cost.count(name) ? g_cost[name] : Cost{};
    d["calls"] = c.calls;
    d["seconds"] = c.seconds;
    d["us_per_batch"] = c.calls ? c.seconds / static_cast<double>(c.calls) * 1e6 : 0.0;
    return d;
  }, py::arg("name"));
  // A policy applied outside a deployment: the same checks, for tests and a_max studies.
  m.def("assign", [](const std::string& name, py::array_t<int32_t, py::array::c_style | py::array::forcecast> routing,
                     std::vector<std::vector<int32_t>> placement, int num_experts, int slots, uint64_t seed, uint64_t batch_id) {
    if (routing.ndim() != 2) raise(invalid_argument("assign: routing must be 2-D (tokens x top-k)"));
    ExpertLayout layout = unwrap(ExpertLayout::create(num_experts, slots, std::move(placement)));
    auto p = unwrap(make_scheduling_policy(name, seed));
    py::array_t<int32_t> out({routing.shape(0), routing.shape(1)});
    Status s;
    {
      py::gil_scoped_release nogil;  // a Python policy takes it back
      s = p->assign(layout, routing.data(), routing.shape(0), static_cast<int>(routing.shape(1)), batch_id, out.mutable_data());
    }
    check(s);
    const int amax = max_activated_experts(layout, out.data(), routing.size());
    return py::make_tuple(out, amax);
  }, py::arg("name"), py::arg("routing"), py::arg("placement"), py::arg("num_experts"), py::arg("slots"), py::arg("seed") = 0,
     py::arg("batch_id") = 0);
}

}  // namespace janus::python
