// Device discovery for the CUDA backend slot (see cuda_backend.h).
#include <cuda_runtime.h>

#include <string>

#include "../errors.h"
#include "cuda_backend.h"

namespace streamsink {

bool cuda_compiled() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

void require_cuda_backend() {
  int n = cuda_device_count();
  if (n == 0) throw EngineError(ErrorCode::BackendUnavailable, "CUDA backend requested but no CUDA device is visible");
  throw EngineError(ErrorCode::BackendUnavailable,
                    "CUDA backend requested: " + std::to_string(n) + " device(s) found, but the GPU forward pass is not part of this build yet");
}

}  // namespace streamsink
