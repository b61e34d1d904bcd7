// The CUDA backend slot. The build compiles src/cuda/*.cu when CMake finds a
// CUDA toolkit (STREAMSINK_CUDA=AUTO|ON) and the stub otherwise; the engine
// asks these functions what is available. The GPU forward pass itself lands
// with the CUDA backend issue; until then `backend: "cuda"` is refused with
// E_BACKEND_UNAVAILABLE and `auto` resolves to the CPU.
#pragma once

namespace streamsink {

bool cuda_compiled();
int cuda_device_count();
// Throws EngineError(BackendUnavailable) naming why the CUDA backend cannot run.
void require_cuda_backend();

}  // namespace streamsink
