// The CUDA backend. The build compiles src/cuda/*.cu when CMake finds a CUDA
// toolkit (STREAMSINK_CUDA=AUTO|ON) and cuda_backend_stub.cpp otherwise; the
// engine only sees this interface, so a CPU-only build links the same code.
//
// A GpuBackend holds one model's weights on the device (bf16, fp16 or fp32)
// and runs Model::forward's contract on the GPU: the tokens of every sequence
// of a step in one pass, each sequence's keys/values appended to its cache.
// A session's cache lives in device memory (KvCache::device()); its host
// arrays stay empty except while a snapshot is exported or imported.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace streamsink {

class KvCache;
class Model;
struct ForwardSequence;
struct ModelConfig;

enum class GpuDtype : uint8_t { BF16 = 0, FP16 = 1, FP32 = 2 };
const char* gpu_dtype_name(GpuDtype d);
// "bf16" | "fp16" | "fp32"; throws EngineError(InvalidArgument) otherwise.
GpuDtype parse_gpu_dtype(const std::string& name);

struct GpuOptions {
  int device = 0;
  GpuDtype dtype = GpuDtype::BF16;
  bool graphs = true;  // replay CUDA graphs for repeated decode shapes
};

class GpuBackend {
 public:
  virtual ~GpuBackend() = default;
  virtual void forward(std::vector<ForwardSequence>& seqs) = 0;
  // Gives `cache` device storage (full capacity for a bounded cache).
  virtual void attach(KvCache& cache) = 0;
  // Copies the slots [begin, end) of each range (every layer, K and V) of a
  // device cache into the cache's host arrays (fp32), allocating them full
  // size; slots outside the ranges stay zero there. Costs what it copies.
  virtual void download(KvCache& cache, const std::vector<std::pair<int64_t, int64_t>>& ranges) = 0;
  // Copies the host arrays into device storage (attaching it), then frees them.
  virtual void upload(KvCache& cache) = 0;
  // Copies the log-softmax of the last row of `cache`'s latest forward (the
  // session's next-token distribution, vocab floats) to `dst`.
  virtual void download_next(const KvCache& cache, float* dst) = 0;
  virtual std::string device_name() const = 0;
  virtual GpuDtype dtype() const = 0;
  // Bytes of weights resident on the device.
  virtual size_t weight_bytes() const = 0;
  // Bytes one cache slot takes (all layers, K and V) on the device.
  virtual size_t slot_bytes() const = 0;
  // Diagnostics: with STREAMSINK_STEP_TIMING=1 each forward records the
  // device time from its descriptor upload to its last download (CUDA
  // events); the mean over the forwards since the last call, in ms (0 when
  // off), and resets. Its difference to the wall time of a step is the time
  // the device waits for the host.
  virtual double take_step_device_ms() = 0;
};

bool cuda_compiled();
int cuda_device_count();
// Throws EngineError(BackendUnavailable) naming why the CUDA backend cannot run.
void require_cuda_backend();

// Uploads a loaded model's weights.
std::unique_ptr<GpuBackend> create_gpu_backend(const Model& model, const GpuOptions& options);
// Random weights of `config`'s shapes generated on the device (benchmarks at
// real scale without a checkpoint; values do not change speed).
std::unique_ptr<GpuBackend> create_random_gpu_backend(const ModelConfig& config, const GpuOptions& options, uint64_t seed);

}  // namespace streamsink
