#include "cache_policy.h"

#include "errors.h"

namespace streamsink {

const char* policy_name(Policy p) {
  switch (p) {
    case Policy::Dense: return "dense";
    case Policy::Window: return "window";
    case Policy::Recompute: return "recompute";
    case Policy::Sinks: return "sinks";
  }
  return "?";
}

Policy parse_policy(const std::string& name) {
  if (name == "dense") return Policy::Dense;
  if (name == "window") return Policy::Window;
  if (name == "recompute") return Policy::Recompute;
  if (name == "sinks") return Policy::Sinks;
  throw EngineError(ErrorCode::InvalidArgument, "unknown cache policy \"" + name + "\" (dense, window, recompute, sinks)");
}

}  // namespace streamsink
