// What every binding source shares: turning a Status into a Python exception, holding
// Python objects from runtime threads, waiting without blocking Ctrl-C.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/status.h"

namespace janus::python {

namespace py = pybind11;

/// janus.JanusError (a RuntimeError) and janus.RequestFailed (a JanusError); set by module.cc.
py::object& janus_error_type();
py::object& request_failed_type();
py::object& not_found_type();  // janus.NotFoundError: a JanusError and a LookupError

/// Raises the Python exception for a failed Status: ValueError for invalid_argument,
/// janus.NotFoundError for not_found, janus.JanusError for the rest; the message is the
/// Status's, with its code name in front ("unavailable: ...").
[[noreturn]] void raise(const Status& s);

template <typename T>
T unwrap(Result<T> r) {
  if (!r.ok()) raise(r.status());
  return std::move(*r);
}
inline void check(const Status& s) {
  if (!s.ok()) raise(s);
}

/// The current Python exception (error_already_set) as text with its traceback: what a
/// failed request or layer batch carries when Python code raised.
std::string format_python_error(py::error_already_set& e);

/// A Python object that a runtime thread may own and drop: its destructor takes the GIL
/// (and does nothing once the interpreter is finalizing, when the reference is leaked on
/// purpose: exiting processes need not free it).
class PyRef {
 public:
  PyRef() = default;
  explicit PyRef(py::object o) : o_(std::move(o)) {}
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  ~PyRef() { reset(); }
  void reset();
  void set(py::object o) {
    reset();
    o_ = std::move(o);
  }
  const py::object& get() const { return o_; }
  explicit operator bool() const { return static_cast<bool>(o_); }

 private:
  py::object o_;
};

/// Whether the interpreter can still run Python code from another thread.
bool interpreter_alive();

/// Waits for `ready()` (called without the GIL, every `slice`), giving Ctrl-C a chance in
/// between: a pending signal raises KeyboardInterrupt here. `timeout_s` < 0: no limit.
/// Returns false on timeout. Must be called with the GIL held.
bool wait_interruptibly(const std::function<bool(std::chrono::milliseconds)>& ready, double timeout_s);

}  // namespace janus::python
