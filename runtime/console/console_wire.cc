#include "runtime/console/console_wire.h"

namespace janus::console_wire {

std::string encode_reply(const Reply& r) {
  return FieldWriter().u8(r.ok).str(r.text).str(r.error).u8(r.watch).strs(r.completions).take();
}

Result<Reply> decode_reply(const std::string& payload) {
  FieldReader in(payload);
  Reply r;
  JANUS_ASSIGN_OR_RETURN(uint8_t ok, in.u8());
  JANUS_ASSIGN_OR_RETURN(r.text, in.str());
  JANUS_ASSIGN_OR_RETURN(r.error, in.str());
  JANUS_ASSIGN_OR_RETURN(uint8_t watch, in.u8());
  JANUS_ASSIGN_OR_RETURN(r.completions, in.strs());
  JANUS_TRY(in.done());
  r.ok = ok != 0;
  r.watch = watch != 0;
  return r;
}

}  // namespace janus::console_wire
