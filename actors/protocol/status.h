// The wire form of janus::Status (runtime/base/status.h), for the replies that carry one
// across processes (a shard's RequestFailure inside its StepDone). The code travels as
// its number and is checked on arrival: a frame from a build with more codes than this
// one is refused, not misread.
#pragma once

#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/sec.hpp>
#include <cstdint>
#include <string>

#include "runtime/base/status.h"

namespace janus {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, Status& x) {
  int32_t code = 0;
  std::string message;
  if constexpr (Inspector::reads_state) {
    code = static_cast<int32_t>(x.code());
    message = x.message();
  }
  auto rebuild = caf::meta::load_callback([&]() -> caf::error {
    if (code < static_cast<int32_t>(ErrorCode::kOk) || code > static_cast<int32_t>(ErrorCode::kInternal))
      return caf::make_error(caf::sec::invalid_argument, "status: unknown error code " + std::to_string(code));
    x = Status(static_cast<ErrorCode>(code), std::move(message));
    return caf::none;
  });
  return f(caf::meta::type_name("janus.Status"), code, message, rebuild);
}

}  // namespace janus
