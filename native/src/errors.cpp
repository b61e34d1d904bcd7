#include "errors.h"

namespace streamsink {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::Io: return "E_IO";
    case ErrorCode::ModelConfig: return "E_MODEL_CONFIG";
    case ErrorCode::ModelFormat: return "E_MODEL_FORMAT";
    case ErrorCode::MissingTensor: return "E_MISSING_TENSOR";
    case ErrorCode::TensorShape: return "E_TENSOR_SHAPE";
    case ErrorCode::UnsupportedModel: return "E_UNSUPPORTED_MODEL";
    case ErrorCode::InvalidArgument: return "E_INVALID_ARGUMENT";
    case ErrorCode::SessionNotFound: return "E_SESSION_NOT_FOUND";
    case ErrorCode::SnapshotCorrupt: return "E_SNAPSHOT_CORRUPT";
    case ErrorCode::SnapshotMismatch: return "E_SNAPSHOT_MISMATCH";
    case ErrorCode::Busy: return "E_BUSY";
    case ErrorCode::BackendUnavailable: return "E_BACKEND_UNAVAILABLE";
    case ErrorCode::Capacity: return "E_CAPACITY";
  }
  return "E_UNKNOWN";
}

}  // namespace streamsink
