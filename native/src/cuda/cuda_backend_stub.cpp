// CPU-only builds: the CUDA backend's entry points, all refusing.
#include "../errors.h"
#include "cuda_backend.h"

namespace streamsink {

namespace {
[[noreturn]] void unavailable() {
  throw EngineError(ErrorCode::BackendUnavailable, "this build has no CUDA backend (no CUDA toolkit was found at build time)");
}
}  // namespace

bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }
void require_cuda_backend() { unavailable(); }
std::unique_ptr<GpuBackend> create_gpu_backend(const Model&, const GpuOptions&) { unavailable(); }
std::unique_ptr<GpuBackend> create_random_gpu_backend(const ModelConfig&, const GpuOptions&, uint64_t) { unavailable(); }

}  // namespace streamsink
