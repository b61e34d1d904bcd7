#include "../errors.h"
#include "cuda_backend.h"

namespace streamsink {

bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }
void require_cuda_backend() {
  throw EngineError(ErrorCode::BackendUnavailable, "this build has no CUDA backend (no CUDA toolkit was found at build time)");
}

}  // namespace streamsink
