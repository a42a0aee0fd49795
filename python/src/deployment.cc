// janus._janus.Deployment and Request: actors/deployment.h for Python.
//
// Threads. Every call into the runtime releases the GIL. Tokens reach a Request's queue
// from the runtime thread that runs the Frontend actor without the GIL; only a request's
// on_token callback (and the asyncio waker) take it, on that same thread, once per token.
// A callback that raises makes the request fail with the Python traceback; the runtime is
// never unwound through Python.
#include <condition_variable>
#include <mutex>
#include <optional>
#include <set>

#include "actors/deployment.h"
#include "python/src/bindings.h"
#include "python/src/common.h"
#include "runtime/config/lua_config.h"

namespace janus::python {

namespace {

using namespace std::chrono_literals;

struct RequestState {
  uint64_t id = 0;
  std::shared_future<Result<GenerateResult>> result;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;  // streamed so far
  bool asked_logprobs = false;  // GenerateRequest::logprobs >= 0
  std::vector<TokenLogprobs> logprobs;  // those of `tokens`, when asked
  size_t next = 0;              // the iterator's position in `tokens`
  bool ended = false;           // on_done came
  std::optional<Result<GenerateResult>> final_result;  // what on_done said (the future resolves just after)
  std::string callback_error;   // the traceback of a raising on_token callback
  std::string finish_reason;
  PyRef on_token, waker;
  Deployment* deployment = nullptr;  // for cancel(); the sink runs only while it serves

  bool finished() {
    std::lock_guard<std::mutex> lk(mu);
    return ended;
  }
};

py::dict to_dict(const ActorSnapshot& a) {
  py::dict d;
  d["name"] = a.name; d["kind"] = a.kind; d["device"] = a.device; d["node"] = a.node; d["alive"] = a.alive;
  d["messages"] = a.messages; d["busy_s"] = a.busy_s; d["busy_fraction"] = a.busy_fraction; d["mailbox"] = a.mailbox;
  d["dropped"] = a.dropped; d["slow_ms"] = a.slow_ms;
  return d;
}
py::dict to_dict(const RequestSnapshot& r) {
  py::dict d;
  d["id"] = r.id; d["state"] = r.state; d["shard"] = r.shard; d["prompt_tokens"] = r.prompt_tokens; d["generated"] = r.generated;
  d["max_new_tokens"] = r.max_new_tokens; d["age_s"] = r.age_s; d["ttft_s"] = r.ttft_s >= 0 ? py::object(py::float_(r.ttft_s)) : py::none();
  return d;
}
py::dict to_dict(const LayerAmax& l) {
  py::dict d;
  d["layer"] = l.layer; d["batches"] = l.batches; d["mean"] = l.mean; d["max"] = l.max;
  return d;
}
py::dict to_dict(const Percentiles& p) {
  py::dict d;
  d["p50"] = p.p50; d["p90"] = p.p90; d["p99"] = p.p99; d["mean"] = p.mean;
  return d;
}
py::dict to_dict(const StepClock& c) {
  py::dict d;
  d["paused"] = c.paused; d["budget"] = c.budget; d["step"] = c.step; d["in_step"] = c.in_step;
  return d;
}
template <typename T>
py::list to_list(const std::vector<T>& v) {
  py::list l;
  for (const T& x : v) l.append(to_dict(x));
  return l;
}

class Request {
 public:
  explicit Request(std::shared_ptr<RequestState> s) : s_(std::move(s)) {}
  uint64_t id() const { return s_->id; }
  bool done() const { return s_->finished() || failed_by_callback(); }  // on_done came, or the callback raised
  std::string finish_reason() const {
    std::lock_guard<std::mutex> lk(s_->mu);
    return s_->finish_reason;
  }
  // Deployment::cancel: the request ends at the next step with the tokens so far
  // (finish_reason "cancelled") and its KV blocks are freed.
  void cancel() {
    Status st;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lk(s_->mu);
      if (!s_->deployment) st = unavailable("request " + std::to_string(s_->id) + ": its deployment is closed");
    }
    check(st);
    RequestHandle h;
    h.id = s_->id;
    {
      py::gil_scoped_release nogil;
      st = s_->deployment->cancel(h);
    }
    check(st);
  }
  std::vector<int32_t> tokens_so_far() const {
    std::lock_guard<std::mutex> lk(s_->mu);
    return s_->tokens;
  }

  // The whole result, waiting (interruptibly) for it.
  py::dict result(std::optional<double> timeout) {
    RequestState& s = *s_;
    auto ready = [&](std::chrono::milliseconds slice) {
      std::unique_lock<std::mutex> lk(s.mu);
      auto due = [&] { return s.ended || !s.callback_error.empty(); };
      s.cv.wait_for(lk, slice, due);
      return due();
    };
    if (!wait_interruptibly(ready, timeout.value_or(-1)))
    {
      PyErr_SetString(PyExc_TimeoutError, ("request " + std::to_string(s_->id) + " is not done yet").c_str());
      throw py::error_already_set();
    }
    raise_if_failed();
    std::lock_guard<std::mutex> lk(s.mu);
    return result_dict(**s.final_result, s.asked_logprobs);
  }

  // The next streamed token (or event: see item()); None once the request is done.
  py::object next_token(std::optional<double> timeout, bool events) {
    RequestState& s = *s_;
    auto ready = [&](std::chrono::milliseconds slice) {
      std::unique_lock<std::mutex> lk(s.mu);
      auto due = [&] { return s.next < s.tokens.size() || !s.callback_error.empty() || s.ended; };
      s.cv.wait_for(lk, slice, due);
      return due();
    };
    if (!wait_interruptibly(ready, timeout.value_or(-1))) {
      PyErr_SetString(PyExc_TimeoutError, ("request " + std::to_string(s.id) + ": no token yet").c_str());
      throw py::error_already_set();
    }
    return take(events);
  }

  // Without waiting: a token (or event), or -1 when none is due yet, or None when the
  // request is done (raising if it failed). For the asyncio iterator.
  py::object poll(bool events) {
    {
      std::lock_guard<std::mutex> lk(s_->mu);
      if (s_->next < s_->tokens.size()) return item(events);
      if (s_->callback_error.empty() && !s_->ended) return py::int_(-1);
    }
    return take(events);
  }

  void set_waker(py::object f) {
    s_->waker.set(std::move(f));  // under the GIL, which the runtime thread takes to call it
  }

 private:
  bool failed_by_callback() const {
    std::lock_guard<std::mutex> lk(s_->mu);
    return !s_->callback_error.empty();
  }
  // The next streamed token, under s_->mu: its id, or with `events` the tuple
  // (token, index, logprobs_tuple or None) janus.TokenEvent is made of.
  py::object item(bool events) {
    const size_t i = s_->next++;
    if (!events) return py::int_(s_->tokens[i]);
    py::object lp = s_->asked_logprobs && i < s_->logprobs.size() ? logprobs_tuple(s_->logprobs[i]) : py::none();
    return py::make_tuple(s_->tokens[i], i, lp);
  }
  py::object take(bool events) {
    {
      std::lock_guard<std::mutex> lk(s_->mu);
      if (s_->next < s_->tokens.size()) return item(events);
    }
    raise_if_failed();
    return py::none();
  }
  void raise_if_failed() {
    std::string cb;
    {
      std::lock_guard<std::mutex> lk(s_->mu);
      cb = s_->callback_error;
    }
    if (!cb.empty()) {
      PyErr_SetString(request_failed_type().ptr(), ("request " + std::to_string(s_->id) + " failed: its on_token callback raised:\n" + cb).c_str());
      throw py::error_already_set();
    }
    Status failed;
    {
      std::lock_guard<std::mutex> lk(s_->mu);
      if (s_->final_result && !s_->final_result->ok()) failed = s_->final_result->status();
    }
    if (!failed.ok()) {
      PyErr_SetString(request_failed_type().ptr(), ("request " + std::to_string(s_->id) + " failed: " + failed.to_string()).c_str());
      throw py::error_already_set();
    }
  }
  std::shared_ptr<RequestState> s_;
};

class PyDeployment;
std::mutex g_live_mu;
std::set<PyDeployment*> g_live;

class PyDeployment {
 public:
  explicit PyDeployment(std::unique_ptr<Deployment> d) : d_(std::move(d)) {
    std::lock_guard<std::mutex> lk(g_live_mu);
    g_live.insert(this);
  }
  ~PyDeployment() {
    {
      std::lock_guard<std::mutex> lk(g_live_mu);
      g_live.erase(this);
    }
    close();
  }

  static DeploymentOptions options(int threads, bool compare_policies, bool trace, bool null_backend) {
    DeploymentOptions o;
    o.threads = threads;
    o.compare_policies = compare_policies;
    o.trace = trace;
    o.null_backend = null_backend;
    return o;
  }

  static std::unique_ptr<PyDeployment> from_file(const std::string& path, const DeploymentOptions& o) {
    Result<std::unique_ptr<Deployment>> d = [&] {
      py::gil_scoped_release nogil;
      return Deployment::from_config(path, o);
    }();
    return std::make_unique<PyDeployment>(unwrap(std::move(d)));
  }
  static std::unique_ptr<PyDeployment> from_string(const std::string& code, const std::string& chunkname, const DeploymentOptions& o) {
    Result<std::unique_ptr<Deployment>> d = [&]() -> Result<std::unique_ptr<Deployment>> {
      py::gil_scoped_release nogil;
      JANUS_ASSIGN_OR_RETURN(GraphSpec spec, load_lua_config_string(code, chunkname));
      return Deployment::create(std::move(spec), o);
    }();
    return std::make_unique<PyDeployment>(unwrap(std::move(d)));
  }

  void close() {
    if (!d_) return;
    std::unique_ptr<Deployment> d = std::move(d_);
    {
      std::lock_guard<std::mutex> lk(requests_mu_);
      for (auto& w : requests_)
        if (auto st = w.lock()) {
          std::lock_guard<std::mutex> l2(st->mu);
          st->deployment = nullptr;
        }
      requests_.clear();
    }
    if (PyGILState_Check()) {
      py::gil_scoped_release nogil;  // runtime threads may be waiting for the GIL to deliver a token
      d->shutdown();
      d.reset();
    } else {
      d->shutdown();
      d.reset();
    }
  }
  bool closed() const { return !d_; }

  Deployment& dep() {
    if (!d_) raise(invalid_argument("the deployment is closed"));
    return *d_;
  }

  Request submit(std::vector<int32_t> ids, py::object on_token, const py::kwargs& kw) {
    GenerateRequest r = make_request(std::move(ids), kw, "submit");
    Deployment& d = dep();
    check(validate_request(d.model().config(), r, "request"));  // refused here, as a ValueError, before it is queued
    auto s = std::make_shared<RequestState>();
    s->asked_logprobs = r.logprobs >= 0;
    s->deployment = &d;
    if (!on_token.is_none()) s->on_token.set(std::move(on_token));
    Deployment* dp = &d;
    std::weak_ptr<RequestState> weak = s;
    auto wake = [](RequestState& st) {
      // Under the GIL on the Frontend's thread; a closed event loop is nobody waiting.
      if (!st.waker || !interpreter_alive()) return;
      py::gil_scoped_acquire gil;
      if (!st.waker) return;
      try {
        st.waker.get()();
      } catch (py::error_already_set& e) {
        (void)format_python_error(e);
      }
    };
    RequestCallbacks cb;
    cb.on_token = [weak, dp, wake](const TokenEvent& ev) {
      std::shared_ptr<RequestState> st = weak.lock();
      if (!st) return;
      bool call;
      {
        std::lock_guard<std::mutex> lk(st->mu);
        st->tokens.push_back(ev.token);
        if (st->asked_logprobs && ev.logprobs) st->logprobs.push_back(*ev.logprobs);
        call = static_cast<bool>(st->on_token) && st->callback_error.empty();
      }
      st->cv.notify_all();
      if (call && interpreter_alive()) {
        std::string failed;
        {
          py::gil_scoped_acquire gil;
          try {
            st->on_token.get()(ev.token);
          } catch (py::error_already_set& e) {
            failed = format_python_error(e);
          }
        }
        if (!failed.empty()) {
          {
            std::lock_guard<std::mutex> lk(st->mu);
            st->callback_error = failed;
          }
          st->cv.notify_all();
          RequestHandle h;
          h.id = ev.request_id;
          (void)dp->cancel(h);  // frees its KV at once; the Request reports the callback's error
        }
      }
      wake(*st);
    };
    cb.on_done = [weak, wake](const Result<GenerateResult>& r) {
      std::shared_ptr<RequestState> st = weak.lock();
      if (!st) return;
      {
        std::lock_guard<std::mutex> lk(st->mu);
        st->ended = true;
        st->final_result = r;
        if (r.ok()) st->finish_reason = r->finish_reason;
      }
      st->cv.notify_all();
      wake(*st);
    };
    RequestHandle h;
    {
      py::gil_scoped_release nogil;
      h = d.submit(std::move(r), std::move(cb));
    }
    s->id = h.id;
    s->result = h.result;
    {
      std::lock_guard<std::mutex> lk(requests_mu_);
      std::erase_if(requests_, [](const std::weak_ptr<RequestState>& w) { return w.expired(); });
      requests_.push_back(s);
    }
    // The runtime holds the sink (and a weak reference); the Request keeps the state alive.
    return Request(s);
  }

  std::unique_ptr<Deployment> d_;
  std::mutex requests_mu_;
  std::vector<std::weak_ptr<RequestState>> requests_;  // to detach them from a closed deployment
};

}  // namespace

void shutdown_all_deployments() {
  std::vector<PyDeployment*> live;
  {
    std::lock_guard<std::mutex> lk(g_live_mu);
    live.assign(g_live.begin(), g_live.end());
  }
  for (PyDeployment* d : live) d->close();
}

void bind_deployment(py::module_& m) {
  py::class_<Request>(m, "Request")
      .def_property_readonly("id", &Request::id)
      .def("done", &Request::done)
      .def("tokens_so_far", &Request::tokens_so_far)
      .def("result", &Request::result, py::arg("timeout") = py::none())
      .def("next_token", &Request::next_token, py::arg("timeout") = py::none(), py::arg("events") = false)
      .def("poll", &Request::poll, py::arg("events") = false)
      .def("set_waker", &Request::set_waker)
      .def("cancel", &Request::cancel)
      .def("finish_reason", &Request::finish_reason);

  using D = PyDeployment;
  py::class_<D>(m, "Deployment")
      .def_static(
          "from_file",
          [](const std::string& path, int threads, bool compare, bool trace, bool null_backend) {
            return D::from_file(path, D::options(threads, compare, trace, null_backend));
          },
          py::arg("path"), py::arg("threads") = 0, py::arg("compare_policies") = false, py::arg("trace") = false,
          py::arg("null_backend") = false)
      .def_static(
          "from_string",
          [](const std::string& code, const std::string& chunkname, int threads, bool compare, bool trace, bool null_backend) {
            return D::from_string(code, chunkname, D::options(threads, compare, trace, null_backend));
          },
          py::arg("code"), py::arg("chunkname") = "<string>", py::arg("threads") = 0, py::arg("compare_policies") = false,
          py::arg("trace") = false, py::arg("null_backend") = false)
      .def("close", &D::close)
      .def_property_readonly("closed", &D::closed)
      .def("submit", &D::submit, py::arg("ids"), py::arg("on_token") = py::none())
      .def("actors", [](D& d) {
        std::vector<ActorSnapshot> a;
        { Deployment& x = d.dep(); py::gil_scoped_release g; a = x.actors(); }
        return to_list(a);
      })
      .def("requests", [](D& d) {
        std::vector<RequestSnapshot> a;
        { Deployment& x = d.dep(); py::gil_scoped_release g; a = x.requests(); }
        return to_list(a);
      })
      .def("placement", [](D& d) {
        std::vector<std::vector<int32_t>> p;
        { Deployment& x = d.dep(); py::gil_scoped_release g; p = x.placement(); }
        return p;
      })
      .def("amax", [](D& d) {
        std::vector<PolicyAmax> a;
        { Deployment& x = d.dep(); py::gil_scoped_release g; a = x.amax_by_policy(); }
        py::list out;
        for (const PolicyAmax& p : a) {
          py::dict e;
          e["policy"] = p.policy; e["active"] = p.active; e["layers"] = to_list(p.layers);
          out.append(e);
        }
        return out;
      })
      .def("experts", [](D& d, int layer) {
        Result<ExpertHeatmap> h = invalid_argument("");
        { Deployment& x = d.dep(); py::gil_scoped_release g; h = x.experts(layer); }
        ExpertHeatmap m = unwrap(std::move(h));
        py::dict e;
        e["layer"] = m.layer; e["num_experts"] = m.num_experts; e["num_instances"] = m.num_instances;
        py::array_t<uint64_t> per_expert(static_cast<py::ssize_t>(m.per_expert.size()));
        std::copy(m.per_expert.begin(), m.per_expert.end(), per_expert.mutable_data());
        py::array_t<uint64_t> per_ie({static_cast<py::ssize_t>(m.num_instances), static_cast<py::ssize_t>(m.num_experts)});
        if (m.per_instance_expert.size() == static_cast<size_t>(m.num_instances) * static_cast<size_t>(m.num_experts))
          std::copy(m.per_instance_expert.begin(), m.per_instance_expert.end(), per_ie.mutable_data());
        else
          std::fill(per_ie.mutable_data(), per_ie.mutable_data() + per_ie.size(), 0);
        e["per_expert"] = per_expert; e["per_instance_expert"] = per_ie; e["placement"] = m.placement;
        return e;
      }, py::arg("layer"))
      .def("metrics", [](D& d) {
        MetricsSnapshot s;
        { Deployment& x = d.dep(); py::gil_scoped_release g; s = x.metrics(); }
        py::dict e;
        e["completed"] = s.completed; e["failed"] = s.failed; e["queued"] = s.queued; e["running"] = s.running;
        e["tokens"] = s.tokens; e["elapsed_s"] = s.elapsed_s; e["tokens_per_s"] = s.tokens_per_s;
        e["ttft_s"] = to_dict(s.ttft_s); e["tpot_s"] = to_dict(s.tpot_s); e["policy"] = s.policy;
        e["amax"] = to_list(s.amax); e["actors"] = to_list(s.actors); e["epoch"] = s.epoch; e["rescales"] = s.rescales;
        e["rescales_failed"] = s.rescales_failed; e["last_rescale_failure"] = s.last_rescale_failure;
        return e;
      })
      .def("graph", [](D& d) {
        Deployment& x = d.dep();
        const GraphSpec& g = x.spec();
        std::vector<ActorSnapshot> actors;
        std::vector<std::vector<int32_t>> placement;
        { py::gil_scoped_release nogil; actors = x.actors(); placement = x.placement(); }
        py::dict e;
        e["source"] = g.source; e["model_dir"] = g.model_dir; e["router"] = g.router.side; e["gate"] = g.egate() ? "EGate" : "AGate";
        e["policy"] = g.scheduler.policy; e["micro_batches"] = g.attention.micro_batches; e["slots"] = g.experts.slots;
        py::list shards, instances, others;
        for (const ActorSnapshot& a : actors) {
          py::dict n;
          n["name"] = a.name; n["kind"] = a.kind; n["device"] = a.device; n["node"] = a.node;
          if (a.kind == "AttentionShard") shards.append(n);
          else if (a.kind == "ExpertInstance") {
            const size_t i = static_cast<size_t>(instances.size());
            n["experts"] = i < placement.size() ? py::cast(placement[i]) : py::list();
            instances.append(n);
          } else others.append(n);
        }
        e["shards"] = shards; e["instances"] = instances; e["others"] = others;
        return e;
      })
      .def("scale", [](D& d, int attention, int moe) {
        Status s;
        { Deployment& x = d.dep(); py::gil_scoped_release g; s = x.scale(attention, moe); }
        check(s);
      }, py::arg("attention"), py::arg("moe"))
      .def("kill", [](D& d, const std::string& name) {
        Status s;
        { Deployment& x = d.dep(); py::gil_scoped_release g; s = x.kill(name); }
        check(s);
      }, py::arg("name"))
      .def("slow", [](D& d, const std::string& name, double ms) {
        Status s;
        { Deployment& x = d.dep(); py::gil_scoped_release g; s = x.slow(name, ms); }
        check(s);
      }, py::arg("name"), py::arg("ms"))
      .def("pause", [](D& d) {
        Result<StepClock> c = invalid_argument("");
        { Deployment& x = d.dep(); py::gil_scoped_release g; c = x.pause(); }
        return to_dict(unwrap(std::move(c)));
      })
      .def("step", [](D& d, int n) {
        Result<StepClock> c = invalid_argument("");
        { Deployment& x = d.dep(); py::gil_scoped_release g; c = x.step(n); }
        return to_dict(unwrap(std::move(c)));
      }, py::arg("n") = 1)
      .def("resume", [](D& d) {
        Result<StepClock> c = invalid_argument("");
        { Deployment& x = d.dep(); py::gil_scoped_release g; c = x.resume(); }
        return to_dict(unwrap(std::move(c)));
      })
      .def("step_clock", [](D& d) {
        Result<StepClock> c = invalid_argument("");
        { Deployment& x = d.dep(); py::gil_scoped_release g; c = x.step_clock(); }
        return to_dict(unwrap(std::move(c)));
      })
      .def("recoveries", [](D& d) {
        std::vector<RecoveryInfo> r;
        { Deployment& x = d.dep(); py::gil_scoped_release g; r = x.recoveries(); }
        py::list out;
        for (const RecoveryInfo& i : r) {
          py::dict e;
          e["what"] = i.what; e["detected_s"] = i.detected_s; e["installed_s"] = i.installed_s; e["died_s"] = i.died_s;
          out.append(e);
        }
        return out;
      })
      .def("actor_names", [](D& d) { return d.dep().actor_names(); })
      .def_property_readonly("vocab_size", [](D& d) { return d.dep().model().config().vocab_size; })
      .def_property_readonly("num_layers", [](D& d) { return d.dep().model().config().num_layers; })
      .def_property_readonly("model_dir", [](D& d) { return d.dep().spec().model_dir; })
      .def("plan", [](D& d) {
        // The generated arrivals `janus bench-serve` serves (workload{arrivals=...}), the same draw.
        Deployment& x = d.dep();
        const GraphSpec& g = x.spec();
        ArrivalSpec arr = g.workload.arrivals;
        if (arr.kind == "all") arr.kind = "poisson";  // as bench-serve does
        auto plan = unwrap(plan_workload(arr, x.model().config().vocab_size, g.attention.max_seq_len));
        py::list out;
        for (const PlannedRequest& r : plan) {
          py::dict e;
          e["at_s"] = r.at_s; e["ids"] = r.prompt; e["max_new_tokens"] = r.max_new_tokens;
          out.append(e);
        }
        return out;
      })
      .def("workload", [](D& d) {
        py::list out;
        for (const GenerateRequest& r : workload_requests(d.dep().spec())) out.append(request_kwargs(r));
        return out;
      });
}

}  // namespace janus::python
