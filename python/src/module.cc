// The extension module janus._janus: the runtime's public C++ API (actors/deployment.h,
// runtime/model, runtime/serving/simulator.h, runtime/text, runtime/scheduling) for the
// Python package python/janus, which documents what users call.
#include <Python.h>

#include <atomic>
#include <thread>

#include "python/src/bindings.h"
#include "python/src/common.h"

namespace janus::python {

namespace {
std::atomic<bool> g_finalizing{false};
}

py::object& janus_error_type() {
  static py::object* t = new py::object();  // leaked: outlives the interpreter's teardown
  return *t;
}
py::object& not_found_type() {
  static py::object* t = new py::object();
  return *t;
}
py::object& request_failed_type() {
  static py::object* t = new py::object();
  return *t;
}

void raise(const Status& s) {
  const std::string msg = std::string(error_code_name(s.code())) + ": " + s.message();
  PyObject* type = janus_error_type().ptr();
  if (s.code() == ErrorCode::kInvalidArgument) type = PyExc_ValueError;
  if (s.code() == ErrorCode::kNotFound) type = not_found_type().ptr();
  PyErr_SetString(type, msg.c_str());
  throw py::error_already_set();
}

std::string format_python_error(py::error_already_set& e) {
  try {
    py::module_ tb = py::module_::import("traceback");
    py::object lines = tb.attr("format_exception")(e.type(), e.value(), e.trace());
    return py::str("").attr("join")(lines).cast<std::string>();
  } catch (...) {
    return e.what();
  }
}

bool interpreter_alive() { return !g_finalizing.load() && Py_IsInitialized() && !_Py_IsFinalizing(); }

void PyRef::reset() {
  if (!o_) return;
  if (!interpreter_alive()) {
    o_.release();  // leaked on purpose: the interpreter is going away
    return;
  }
  py::gil_scoped_acquire gil;
  o_ = py::object();
}

bool wait_interruptibly(const std::function<bool(std::chrono::milliseconds)>& ready, double timeout_s) {
  const auto start = std::chrono::steady_clock::now();
  const auto slice = std::chrono::milliseconds(20);
  while (true) {
    bool done;
    {
      py::gil_scoped_release nogil;
      done = ready(slice);
    }
    if (done) return true;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (timeout_s >= 0 && std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= timeout_s)
      return false;
  }
}

void mark_finalizing() { g_finalizing.store(true); }

}  // namespace janus::python

PYBIND11_MODULE(_janus, m) {
  using namespace janus::python;
  m.doc() = "Janus's runtime for Python: the C++ embedding API (see the janus package for the documented API).";
  py::object runtime_error = py::reinterpret_borrow<py::object>(PyExc_RuntimeError);
  janus_error_type() = py::reinterpret_steal<py::object>(
      PyErr_NewExceptionWithDoc("janus.JanusError", "An error the Janus runtime reported (its Status code and message).",
                                runtime_error.ptr(), nullptr));
  request_failed_type() = py::reinterpret_steal<py::object>(PyErr_NewExceptionWithDoc(
      "janus.RequestFailed", "A request that ended with an error (a dead actor, a failed layer batch, a raising callback).",
      janus_error_type().ptr(), nullptr));
  py::tuple not_found_bases = py::make_tuple(janus_error_type(), py::reinterpret_borrow<py::object>(PyExc_LookupError));
  not_found_type() = py::reinterpret_steal<py::object>(PyErr_NewExceptionWithDoc(
      "janus.NotFoundError", "Something that should exist does not: a file, a tensor, an actor, a layer.", not_found_bases.ptr(), nullptr));
  m.attr("JanusError") = janus_error_type();
  m.attr("NotFoundError") = not_found_type();
  m.attr("RequestFailed") = request_failed_type();
  bind_engine(m);
  bind_deployment(m);
  bind_policy(m);
  bind_text(m);
  bind_simulate(m);
  // Before the interpreter finalizes: drop the Python policies and shut deployments down
  // while Python code may still run, and make runtime threads stop calling into Python.
  py::module_::import("atexit").attr("register")(py::cpp_function([]() {
    shutdown_all_deployments();
    unregister_python_policies();
    mark_finalizing();
  }));
}
