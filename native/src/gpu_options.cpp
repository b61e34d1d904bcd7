// GPU option names shared by CUDA and CPU-only builds.
#include "cuda/cuda_backend.h"
#include "errors.h"

namespace streamsink {

const char* gpu_dtype_name(GpuDtype d) {
  switch (d) {
    case GpuDtype::BF16: return "bf16";
    case GpuDtype::FP16: return "fp16";
    case GpuDtype::FP32: return "fp32";
  }
  return "?";
}

GpuDtype parse_gpu_dtype(const std::string& name) {
  if (name == "bf16") return GpuDtype::BF16;
  if (name == "fp16") return GpuDtype::FP16;
  if (name == "fp32") return GpuDtype::FP32;
  throw EngineError(ErrorCode::InvalidArgument, "dtype must be bf16, fp16 or fp32, got \"" + name + "\"");
}

}  // namespace streamsink
