// Engine errors: every failure the engine can report carries a stable code
// (mapped to a JS error `code` by the addon and to a gRPC status by the
// service) and a message that names the problem. The engine never calls
// exit() or abort(); callers catch EngineError.
#pragma once
#include <stdexcept>
#include <string>

namespace streamsink {

enum class ErrorCode {
  Io,                 // a file cannot be opened or read
  ModelConfig,        // config.json is missing, not JSON, or lacks a field
  ModelFormat,        // a safetensors file is truncated or its header is bad
  MissingTensor,      // a tensor the architecture needs is absent
  TensorShape,        // a tensor has the wrong shape or dtype
  UnsupportedModel,   // an architecture or option we do not implement
  InvalidArgument,    // a caller passed a bad value (token id, policy, size)
  SessionNotFound,    // unknown or closed session handle
  SnapshotCorrupt,    // a session snapshot fails its checksum or is truncated
  SnapshotMismatch,   // a snapshot from another model, version or layout
  Busy,               // the engine is in the middle of a step
  BackendUnavailable, // e.g. `cuda` requested on a build without it
  Capacity,           // a dense session outgrew its configured maximum
};

const char* error_code_name(ErrorCode code);

class EngineError : public std::runtime_error {
 public:
  EngineError(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace streamsink

#define SS_CHECK(cond, code, msg)                                         \
  do {                                                                    \
    if (!(cond)) throw ::streamsink::EngineError(::streamsink::ErrorCode::code, (msg)); \
  } while (0)
