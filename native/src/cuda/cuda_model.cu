// The CUDA backend's forward pass (see cuda_backend.h and kernels.cuh).
//
// One forward() runs every sequence of an engine step together: the tokens of
// all sequences are stacked as rows, so each weight matrix is read once per
// step whatever the number of sessions (cuBLAS GEMMs, fp32 accumulation and
// output); attention runs per (row, KV head, split of the context) against
// each session's own cache. The only host round-trips per step are one upload
// of the step's descriptors and one download of the logits asked for.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <tuple>
#include <string>

#include "../errors.h"
#include "../kv_cache.h"
#include "../model.h"
#include "../rope.h"
#include "cuda_backend.h"
#include "kernels.cuh"

namespace streamsink {

namespace {

[[noreturn]] void cuda_fail(const char* what, const std::string& detail) {
  throw EngineError(ErrorCode::BackendUnavailable, std::string("CUDA: ") + what + ": " + detail);
}

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky-free allocation error
    throw EngineError(ErrorCode::Capacity, std::string("CUDA: out of device memory in ") + what);
  }
  cuda_fail(what, cudaGetErrorString(e));
}

void check(cublasStatus_t e, const char* what) {
  if (e != CUBLAS_STATUS_SUCCESS) cuda_fail(what, "cuBLAS status " + std::to_string(int(e)));
}

// A launch configuration with the programmatic-stream-serialization
// attribute (when `pdl`): the kernel may start while its predecessor runs and
// waits for it with griddepcontrol.wait (kernels.cuh, pdl_wait).
struct DependentLaunch {
  cudaLaunchConfig_t cfg{};
  cudaLaunchAttribute attr{};
  DependentLaunch(dim3 grid, dim3 block, cudaStream_t stream, bool pdl) {
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.stream = stream;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = pdl ? 1 : 0;
  }
  DependentLaunch(const DependentLaunch&) = delete;
  DependentLaunch& operator=(const DependentLaunch&) = delete;
};

// Owned device allocation.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { reset(bytes); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  void reset(size_t bytes) {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    bytes_ = 0;
    if (bytes == 0) return;
    check(cudaMalloc(&p_, bytes), "cudaMalloc");
    bytes_ = bytes;
  }
  // Grows (contents discarded) to at least `bytes`; true when it moved.
  bool ensure(size_t bytes) {
    if (bytes <= bytes_) return false;
    reset(std::max(bytes, bytes_ + bytes_ / 2));
    return true;
  }
  template <typename U = void>
  U* get() const { return static_cast<U*>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// Owned pinned host allocation (for copies that overlap nothing but must not
// be staged): grows, contents discarded, to at least `bytes` (and `least`).
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (p_) cudaFreeHost(p_);
  }
  void ensure(size_t bytes, size_t least = 0) {
    if (bytes <= bytes_) return;
    if (p_) cudaFreeHost(p_);
    p_ = nullptr;
    bytes_ = 0;
    const size_t want = std::max(bytes, least);
    check(cudaMallocHost(&p_, want), "cudaMallocHost");
    bytes_ = want;
  }
  template <typename U = void>
  U* get() const { return static_cast<U*>(p_); }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// A session's device cache: K and V, each (layers, slots, kv_heads, head_dim).
struct DeviceKv {
  DeviceBuffer k, v;
  int64_t slots = 0;
  DeviceBuffer next;  // vocab floats: the log-softmax after the cache's last token
};

template <typename T> struct CudaType;
template <> struct CudaType<float> { static constexpr cudaDataType_t value = CUDA_R_32F; static constexpr GpuDtype dtype = GpuDtype::FP32; };
template <> struct CudaType<__half> { static constexpr cudaDataType_t value = CUDA_R_16F; static constexpr GpuDtype dtype = GpuDtype::FP16; };
template <> struct CudaType<__nv_bfloat16> { static constexpr cudaDataType_t value = CUDA_R_16BF; static constexpr GpuDtype dtype = GpuDtype::BF16; };

int grid_for(int64_t n, int threads = 256) { return int(std::min<int64_t>((n + threads - 1) / threads, 4096)); }

struct GpuLayer {
  DeviceBuffer wqkv, wo, w_up, w_down;              // T
  DeviceBuffer bqkv, bo, b_up, b_down;              // fp32, may be empty
  DeviceBuffer norm1_w, norm1_b, norm2_w, norm2_b;  // fp32, may be empty
};

const float* opt(const DeviceBuffer& b) { return b.bytes() ? b.get<float>() : nullptr; }

template <typename T>
class CudaModel final : public GpuBackend {
 public:
  CudaModel(const ModelConfig& config, const GpuOptions& options) : c_(config), options_(options) {
    if (c_.hidden > gpu::kNormPerThread * 1024)
      throw EngineError(ErrorCode::InvalidArgument, "CUDA backend: hidden size " + std::to_string(c_.hidden) +
                                                        " is above the norm kernels' limit of " +
                                                        std::to_string(gpu::kNormPerThread * 1024));
    check(cudaSetDevice(options.device), "cudaSetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, options.device), "cudaGetDeviceProperties");
    name_ = prop.name;
    sm_count_ = prop.multiProcessorCount;
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cublasCreate(&blas_), "cublasCreate");
    check(cublasSetStream(blas_, stream_), "cublasSetStream");
    // A fixed cuBLAS workspace, so GEMMs can be captured into CUDA graphs.
    blas_ws_.reset(size_t(32) << 20);
    check(cublasSetWorkspace(blas_, blas_ws_.get(), blas_ws_.bytes()), "cublasSetWorkspace");
    if (step_timing_) {
      check(cudaEventCreate(&step_begin_), "cudaEventCreate");
      check(cudaEventCreate(&step_end_), "cudaEventCreate");
    }
    if (c_.position == PositionKind::Rotary) rope_ = std::make_unique<RopeTable>(c_.rotary_dim, c_.rope_theta);
    const int G = c_.heads / c_.kv_heads;
    attn_smem_ = gpu::attn_smem_bytes(G, c_.head_dim);
    if (attn_smem_ > size_t(prop.sharedMemPerBlockOptin))
      throw EngineError(ErrorCode::UnsupportedModel, "CUDA backend: attention needs " + std::to_string(attn_smem_) +
                                                         " bytes of shared memory per block, the device allows " +
                                                         std::to_string(prop.sharedMemPerBlockOptin));
    check(cudaFuncSetAttribute(gpu::attn_split<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(attn_smem_)),
          "cudaFuncSetAttribute");
    layers_.resize(size_t(c_.layers));
  }

  ~CudaModel() override {
    drop_graphs();
    if (step_begin_) cudaEventDestroy(step_begin_);
    if (step_end_) cudaEventDestroy(step_end_);
    if (blas_) cublasDestroy(blas_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  void upload_from(const Model& m) {
    const int64_t H = c_.hidden, I = c_.intermediate, V = c_.vocab_size;
    const int64_t up_dim = c_.activation == Activation::SwiGLU ? 2 * I : I;
    const int64_t attn_dim = int64_t(c_.heads) * c_.head_dim;
    // W diag(w): column i of a matrix that reads norm(x) scaled by w[i].
    auto folded = [&](const std::vector<float>& W, const std::vector<float>& nw) {
      std::vector<float> f(W);
      if (int64_t(nw.size()) != H) throw EngineError(ErrorCode::TensorShape, "CUDA upload: norm weight has an unexpected size");
      for (size_t e = 0; e < f.size(); ++e) f[e] *= nw[e % size_t(H)];
      return f;
    };
    if (fold_norms_) ones_ = to_device_f(std::vector<float>(size_t(H), 1.0f));
    for (int l = 0; l < c_.layers; ++l) {
      const LayerWeights& w = m.layer(l);
      GpuLayer& g = layers_[size_t(l)];
      g.wqkv = to_device_t(fold_norms_ ? folded(w.wqkv, w.norm1_w) : w.wqkv, int64_t(c_.qkv_dim()) * H);
      g.wo = to_device_t(w.wo, H * attn_dim);
      g.w_up = to_device_t(fold_norms_ ? folded(w.w_up, w.norm2_w) : w.w_up, up_dim * H);
      g.w_down = to_device_t(w.w_down, H * I);
      g.bqkv = to_device_f(w.bqkv);
      g.bo = to_device_f(w.bo);
      g.b_up = to_device_f(w.b_up);
      g.b_down = to_device_f(w.b_down);
      g.norm1_w = to_device_f(w.norm1_w);
      g.norm1_b = to_device_f(w.norm1_b);
      g.norm2_w = to_device_f(w.norm2_w);
      g.norm2_b = to_device_f(w.norm2_b);
    }
    embed_ = to_device_t(m.embedding(), V * H);
    if (&m.lm_head() != &m.embedding()) {
      lm_folded_ = fold_norms_ && lm_fold_;
      lm_head_ = to_device_t(lm_folded_ ? folded(m.lm_head(), m.final_norm_weight()) : m.lm_head(), V * H);
    }
    final_w_ = to_device_f(m.final_norm_weight());
    final_b_ = to_device_f(m.final_norm_bias());
    alibi_ = to_device_f(m.alibi());
    check(cudaStreamSynchronize(stream_), "weight upload");
    staging_.reset(0);
  }

  void randomize(uint64_t seed) {
    const int64_t H = c_.hidden, I = c_.intermediate, V = c_.vocab_size;
    const int64_t up_dim = c_.activation == Activation::SwiGLU ? 2 * I : I;
    const int64_t attn_dim = int64_t(c_.heads) * c_.head_dim;
    auto rand_t = [&](int64_t n, float scale) {
      DeviceBuffer b(size_t(n) * sizeof(T));
      gpu::fill_random<T><<<grid_for(n), 256, 0, stream_>>>(b.get<T>(), n, seed++ * 0x100000001ull, scale);
      return b;
    };
    auto ones = [&](int64_t n) {
      std::vector<float> h(size_t(n), 1.0f);
      return to_device_f(h);
    };
    if (fold_norms_) ones_ = ones(H);  // the random norms are ones: folding them changes nothing
    for (int l = 0; l < c_.layers; ++l) {
      GpuLayer& g = layers_[size_t(l)];
      g.wqkv = rand_t(int64_t(c_.qkv_dim()) * H, 1.0f / std::sqrt(float(H)));
      g.wo = rand_t(H * attn_dim, 1.0f / std::sqrt(float(attn_dim)));
      g.w_up = rand_t(up_dim * H, 1.0f / std::sqrt(float(H)));
      g.w_down = rand_t(H * I, 1.0f / std::sqrt(float(I)));
      g.norm1_w = ones(H);
      if (c_.mlp_norm_separate || !c_.parallel_residual) g.norm2_w = ones(H);
      if (c_.norm == NormKind::LayerNorm && c_.norm_bias) {
        g.norm1_b = to_device_f(std::vector<float>(size_t(H), 0.0f));
        g.norm2_b = to_device_f(std::vector<float>(size_t(H), 0.0f));
      }
    }
    embed_ = rand_t(V * H, 1.0f);
    if (!c_.tied_embeddings) {
      lm_head_ = rand_t(V * H, 1.0f / std::sqrt(float(H)));
      lm_folded_ = fold_norms_ && lm_fold_;
    }
    final_w_ = ones(H);
    if (c_.position == PositionKind::Alibi) alibi_ = to_device_f(alibi_slopes(c_.heads, c_.alibi_bias_max));
    check(cudaStreamSynchronize(stream_), "random weights");
  }

  std::string device_name() const override { return name_; }
  GpuDtype dtype() const override { return CudaType<T>::dtype; }
  size_t weight_bytes() const override { return weight_bytes_; }
  size_t slot_bytes() const override { return size_t(c_.layers) * 2 * size_t(c_.kv_heads) * c_.head_dim * sizeof(T); }

  void attach(KvCache& cache) override { ensure_device(cache); }

  void download(KvCache& cache, const std::vector<std::pair<int64_t, int64_t>>& ranges) override {
    auto dk = device_of(cache);
    cache.set_host_storage(true);
    if (!dk || dk->slots == 0) return;
    const int64_t sf = cache.slot_floats();
    int64_t per_layer = 0;  // floats of one layer's K (or V) that the ranges cover
    for (const auto& [b, e] : ranges) {
      if (b < 0 || b > e || e > cache.slots_allocated())
        throw EngineError(ErrorCode::InvalidArgument, "cache download: slot range out of the cache");
      per_layer += (e - b) * sf;
    }
    if (per_layer == 0) return;
    staging_.ensure(size_t(per_layer) * sizeof(float));
    float* stage = staging_.get<float>();
    for (int l = 0; l < cache.layers(); ++l)
      for (int kv = 0; kv < 2; ++kv) {
        const T* base = (kv == 0 ? dk->k : dk->v).template get<T>() + int64_t(l) * dk->slots * sf;
        std::vector<float>& dst = kv == 0 ? cache.layer_keys(l) : cache.layer_values(l);
        int64_t off = 0;
        for (const auto& [b, e] : ranges) {
          const int64_t n = (e - b) * sf;
          if (n == 0) continue;
          gpu::convert_from<T><<<grid_for(n), 256, 0, stream_>>>(base + b * sf, n, stage + off);
          check(cudaMemcpyAsync(dst.data() + b * sf, stage + off, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost,
                                stream_),
                "cache download");
          off += n;
        }
        check(cudaStreamSynchronize(stream_), "cache download");  // the staging buffer is reused
      }
  }

  void upload(KvCache& cache) override {
    ensure_device(cache);
    auto dk = device_of(cache);
    const int64_t n = cache.slots_allocated() * cache.slot_floats();
    staging_.ensure(size_t(n) * sizeof(float));
    for (int l = 0; l < cache.layers(); ++l)
      for (int kv = 0; kv < 2; ++kv) {
        const std::vector<float>& src = kv == 0 ? cache.layer_keys(l) : cache.layer_values(l);
        check(cudaMemcpyAsync(staging_.get(), src.data(), size_t(n) * sizeof(float), cudaMemcpyHostToDevice, stream_),
              "cache upload");
        T* dst = (kv == 0 ? dk->k : dk->v).template get<T>() + int64_t(l) * dk->slots * cache.slot_floats();
        gpu::convert_to<T><<<grid_for(n), 256, 0, stream_>>>(staging_.get<float>(), n, dst);
        check(cudaStreamSynchronize(stream_), "cache upload");
      }
    cache.set_host_storage(false);
  }

  void forward(std::vector<ForwardSequence>& seqs) override;

 private:
  void download_next(const KvCache& cache, float* dst) override {
    check(cudaSetDevice(options_.device), "cudaSetDevice");
    const DeviceKv* dk = device_of(cache);
    if (!dk || !dk->next.bytes()) throw EngineError(ErrorCode::InvalidArgument, "CUDA: the cache has no next-token distribution");
    // The last step's raw logits and their log-sum-exp after them (gpu::next_top).
    std::vector<float> raw(size_t(c_.vocab_size) + 1);
    check(cudaMemcpy(raw.data(), dk->next.get(), raw.size() * sizeof(float), cudaMemcpyDeviceToHost), "next download");
    const float lse = raw.back();
    for (size_t i = 0; i + 1 < raw.size(); ++i) dst[i] = raw[i] - lse;
  }

  double take_step_device_ms() override {
    const double mean = step_count_ ? step_ms_ / double(step_count_) : 0.0;
    step_ms_ = 0;
    step_count_ = 0;
    return mean;
  }

  static DeviceKv* device_of(const KvCache& cache) { return static_cast<DeviceKv*>(cache.device().get()); }

  // Device storage for all of cache.slots_allocated(); a dense cache that
  // grew is moved to a larger allocation layer by layer.
  void ensure_device(KvCache& cache) {
    DeviceKv* dk = device_of(cache);
    const int64_t want = cache.slots_allocated();
    if (want == 0 || (dk && dk->slots >= want)) return;
    auto fresh = std::make_shared<DeviceKv>();
    const size_t slot_elems = size_t(cache.slot_floats());
    const size_t bytes = size_t(c_.layers) * size_t(want) * slot_elems * sizeof(T);
    fresh->k.reset(bytes);
    fresh->v.reset(bytes);
    fresh->slots = want;
    if (dk) fresh->next = std::move(dk->next);
    else fresh->next.reset((size_t(c_.vocab_size) + 1) * sizeof(float));
    check(cudaMemsetAsync(fresh->k.get(), 0, bytes, stream_), "cache init");
    check(cudaMemsetAsync(fresh->v.get(), 0, bytes, stream_), "cache init");
    if (dk && dk->slots > 0) {
      const size_t old_row = size_t(dk->slots) * slot_elems * sizeof(T), new_row = size_t(want) * slot_elems * sizeof(T);
      check(cudaMemcpy2DAsync(fresh->k.get(), new_row, dk->k.get(), old_row, old_row, size_t(c_.layers),
                              cudaMemcpyDeviceToDevice, stream_), "cache grow");
      check(cudaMemcpy2DAsync(fresh->v.get(), new_row, dk->v.get(), old_row, old_row, size_t(c_.layers),
                              cudaMemcpyDeviceToDevice, stream_), "cache grow");
    }
    check(cudaStreamSynchronize(stream_), "cache allocation");
    cache.set_device(std::static_pointer_cast<void>(fresh));
  }

  DeviceBuffer to_device_t(const std::vector<float>& h, int64_t expect) {
    if (int64_t(h.size()) != expect) throw EngineError(ErrorCode::TensorShape, "CUDA upload: weight has an unexpected size");
    DeviceBuffer out(h.size() * sizeof(T));
    staging_.ensure(h.size() * sizeof(float));
    check(cudaMemcpyAsync(staging_.get(), h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice, stream_), "weight upload");
    gpu::convert_to<T><<<grid_for(int64_t(h.size())), 256, 0, stream_>>>(staging_.get<float>(), int64_t(h.size()), out.get<T>());
    check(cudaStreamSynchronize(stream_), "weight upload");
    weight_bytes_ += out.bytes();
    return out;
  }

  DeviceBuffer to_device_f(const std::vector<float>& h) {
    DeviceBuffer out(h.size() * sizeof(float));
    if (!h.empty())
      check(cudaMemcpyAsync(out.get(), h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice, stream_), "weight upload");
    check(cudaStreamSynchronize(stream_), "weight upload");
    weight_bytes_ += out.bytes();
    return out;
  }

  // Y (rows, out) = X (rows, in) W^T, W (out, in) row-major, fp32 output.
  // Warps per output row (KS): a matrix with few rows (o_proj, down_proj)
  // gives each row 4 warps so every SM has enough loads in flight; more rows
  // keep one warp per row (measured: 2 or 8 warps per row were slower for
  // every Llama-2-7B matrix, the per-lane load batch getting shorter).
  int gemv_split(int64_t out) const { return out * 32 < int64_t(sm_count_) * 2048 ? 4 : 1; }

  // gemv_rows for 1..4 rows, launched as a programmatic dependent of the
  // kernel before it (which triggers early), so its first weight loads
  // overlap that kernel. GLU: the [gate | up] GEMV with SwiGLU in its
  // epilogue (act, rows x out/2 in T). RMS: the input RMSNorm fused (X is the
  // fp32 residual stream, the norm weight folded into W).
  template <bool GLU, bool RMS>
  static auto gemv_fn(int64_t rows, int ks) -> void (*)(gpu::GemvArgs<T>) {
    if (ks == 1) {
      switch (rows) {
        case 1: return gpu::gemv_rows<T, 1, 1, GLU, RMS>;
        case 2: return gpu::gemv_rows<T, 2, 1, GLU, RMS>;
        case 3: return gpu::gemv_rows<T, 3, 1, GLU, RMS>;
        default: return gpu::gemv_rows<T, 4, 1, GLU, RMS>;
      }
    }
    switch (rows) {
      case 1: return gpu::gemv_rows<T, 1, 4, GLU, RMS>;
      case 2: return gpu::gemv_rows<T, 2, 4, GLU, RMS>;
      case 3: return gpu::gemv_rows<T, 3, 4, GLU, RMS>;
      default: return gpu::gemv_rows<T, 4, 4, GLU, RMS>;
    }
  }
  template <bool GLU, bool RMS>
  void launch_gemv(int64_t rows, gpu::GemvArgs<T> a) {
    const int ks = gemv_split(a.out);
    const int64_t per_block = 8 / ks / (GLU ? 2 : 1), units = GLU ? a.out / 2 : a.out;
    DependentLaunch dl(dim3(unsigned((units + per_block - 1) / per_block)), dim3(256), stream_, pdl_);
    check(cudaLaunchKernelEx(&dl.cfg, gemv_fn<GLU, RMS>(rows, ks), a), "GEMV launch");
  }
  static gpu::GemvArgs<T> gemv_args(const DeviceBuffer& w, const void* x, int64_t in, int64_t out) {
    gpu::GemvArgs<T> a{};
    a.W = w.get<T>();
    a.X = x;
    a.in = int(in);
    a.out = int(out);
    return a;
  }
  bool gemv_shape(int64_t rows, int64_t in) const { return rows <= 4 && in % (16 / int64_t(sizeof(T))) == 0; }

  // 5 to STREAMSINK_GEMV_MMA (default 8, at most 32) rows of bf16/fp16 on
  // tensor cores (gpu::gemv_mma), NT tiles of 8 rows of X.
  template <int NT, bool GLU>
  void gemv_tc(const DeviceBuffer& w, const T* x, int64_t rows, int64_t in, int64_t out, float* y, const float* bias, T* act) {
    if constexpr (sizeof(T) == 2) {
      const int64_t per_block = GLU ? 8 : 16, units = GLU ? out / 2 : out;
      DependentLaunch dl(dim3(unsigned((units + per_block - 1) / per_block)), dim3(256), stream_, pdl_);
      check(cudaLaunchKernelEx(&dl.cfg, gpu::gemv_mma<T, NT, GLU>, w.get<T>(), x, int(in), int(out), int(rows), y, bias, act),
            "GEMV launch");
    }
  }
  bool tensor_core_gemv(int64_t rows, int64_t in) const {
    return sizeof(T) == 2 && rows > 4 && rows <= std::min(gemv_mma_rows_, 32) && in % 8 == 0;
  }
  template <bool GLU>
  void gemv_tc_rows(const DeviceBuffer& w, const T* x, int64_t rows, int64_t in, int64_t out, float* y, const float* bias,
                    T* act) {
    switch ((rows + 7) / 8) {
      case 1: return gemv_tc<1, GLU>(w, x, rows, in, out, y, bias, act);
      case 2: return gemv_tc<2, GLU>(w, x, rows, in, out, y, bias, act);
      case 3: return gemv_tc<3, GLU>(w, x, rows, in, out, y, bias, act);
      default: return gemv_tc<4, GLU>(w, x, rows, in, out, y, bias, act);
    }
  }

  // Up to STREAMSINK_GEMM_ROWS (default 32, at most 64) rows of bf16/fp16 not taken by
  // the GEMVs above: gpu::gemm_rows, MT tiles of 16 rows of X (1..4).
  bool rows_gemm(int64_t rows, int64_t in) const {
    return sizeof(T) == 2 && rows >= 1 && rows <= std::min(gemm_rows_max_, 64) && in % gpu::kRowsStage == 0;
  }
  static int rows_mt(int64_t rows) { return int((rows + 15) / 16); }
  // Whether gemm() takes one of the kernels above rather than cuBLAS.
  bool gemm_path(int64_t rows, int64_t in) const {
    return gemv_shape(rows, in) || tensor_core_gemv(rows, in) || rows_gemm(rows, in);
  }
  // Resident gemm_rows blocks per SM.
  template <int MT, bool GLU>
  static int rows_per_sm() {
    static const int n = [] {
      int blocks = 0;
      check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, gpu::gemm_rows<T, MT, GLU>, 256, 0), "gemm_rows occupancy");
      return std::max(blocks, 1);
    }();
    return n;
  }
  template <bool GLU>
  int rows_per_sm_for(int mt) const {
    if constexpr (sizeof(T) != 2) {
      return 1;  // not used: rows_gemm is false
    } else {
      switch (mt) {
        case 1: return rows_per_sm<1, GLU>();
        case 2: return rows_per_sm<2, GLU>();
        case 3: return rows_per_sm<3, GLU>();
        default: return rows_per_sm<4, GLU>();
      }
    }
  }
  // Stream-K grid: one block per resident slot, at most one per unit (the
  // kernel's owner count assumes every block owns at least one unit).
  struct RowsPlan {
    int64_t row_blocks, blocks;
    size_t ws_bytes, counter_bytes;
  };
  RowsPlan rows_plan(int64_t rows, int64_t in, int64_t out, bool glu) const {
    const int mt = rows_mt(rows);
    const int64_t row_blocks = glu ? (out / 2 + gpu::kRowsBlock / 2 - 1) / (gpu::kRowsBlock / 2)
                                   : (out + gpu::kRowsBlock - 1) / gpu::kRowsBlock;
    const int64_t slots = int64_t(glu ? rows_per_sm_for<true>(mt) : rows_per_sm_for<false>(mt)) * sm_count_;
    const int64_t grid = gemm_rows_blocks_ > 0 ? gemm_rows_blocks_ : slots;
    const int64_t blocks = std::min(grid, row_blocks * (in / gpu::kRowsStage));
    const size_t tile = size_t(16 * mt * gpu::kRowsBlock) * sizeof(float);
    return {row_blocks, blocks, size_t(blocks + row_blocks) * tile, size_t(row_blocks) * sizeof(unsigned)};
  }
  template <int MT, bool GLU>
  void gemm_rows_mt(const DeviceBuffer& w, const T* x, int64_t rows, int64_t in, int64_t out, float* y, const float* bias,
                    T* act) {
    if constexpr (sizeof(T) == 2) {
      const RowsPlan plan = rows_plan(rows, in, out, GLU);
      if (plan.ws_bytes > rows_ws_.bytes() || plan.counter_bytes > rows_counters_.bytes())
        throw EngineError(ErrorCode::BackendUnavailable, "CUDA: gemm_rows workspace not reserved for this shape");
      gpu::GemmRowsArgs<T> a{};
      a.W = w.get<T>();
      a.X = x;
      a.in = int(in);
      a.out = int(out);
      a.R = int(rows);
      a.row_blocks = int(plan.row_blocks);
      a.Y = y;
      a.glu_bias = bias;
      a.act = act;
      a.ws = rows_ws_.get<float>();
      a.counters = rows_counters_.get<unsigned>();
      DependentLaunch dl(dim3(unsigned(plan.blocks)), dim3(256), stream_, pdl_);
      check(cudaLaunchKernelEx(&dl.cfg, gpu::gemm_rows<T, MT, GLU>, a), "gemm_rows launch");
    }
  }
  template <bool GLU>
  void gemm_rows(const DeviceBuffer& w, const T* x, int64_t rows, int64_t in, int64_t out, float* y, const float* bias,
                 T* act) {
    switch (rows_mt(rows)) {
      case 1: return gemm_rows_mt<1, GLU>(w, x, rows, in, out, y, bias, act);
      case 2: return gemm_rows_mt<2, GLU>(w, x, rows, in, out, y, bias, act);
      case 3: return gemm_rows_mt<3, GLU>(w, x, rows, in, out, y, bias, act);
      default: return gemm_rows_mt<4, GLU>(w, x, rows, in, out, y, bias, act);
    }
  }
  // Reserves gemm_rows's split-K workspace and counters for a step of `rows`
  // (before any graph capture), given the step's matrix widths; true when a
  // buffer moved.
  bool reserve_rows_gemm(int64_t rows, int64_t n_out, int64_t qkv_dim, int64_t attn_dim, int64_t up_dim) {
    size_t ws = 0, counters = 0;
    auto need = [&](int64_t r, int64_t in, int64_t out, bool glu) {
      if (!rows_gemm(r, in)) return;
      const RowsPlan plan = rows_plan(r, in, out, glu);
      ws = std::max(ws, plan.ws_bytes);
      counters = std::max(counters, plan.counter_bytes);
    };
    const int64_t H = c_.hidden, I = c_.intermediate;
    need(rows, H, qkv_dim, false);
    need(rows, attn_dim, H, false);
    need(rows, H, up_dim, false);
    if (c_.activation == Activation::SwiGLU) need(rows, H, up_dim, true);
    need(rows, I, H, false);
    need(n_out, H, c_.vocab_size, false);
    bool moved = rows_ws_.ensure(ws);
    if (rows_counters_.ensure(counters)) {
      check(cudaMemsetAsync(rows_counters_.get(), 0, rows_counters_.bytes(), stream_), "gemm_rows counters");
      moved = true;
    }
    return moved;
  }

  void gemm(const DeviceBuffer& w, const T* x, int64_t rows, int64_t in, int64_t out, float* y) {
    // A few rows (decode): a weight-streaming GEMV reaches the bandwidth
    // limit where cuBLAS's small-N kernels do not.
    if (gemv_shape(rows, in)) {
      gpu::GemvArgs<T> a = gemv_args(w, x, in, out);
      a.Y = y;
      return launch_gemv<false, false>(rows, a);
    }
    if (tensor_core_gemv(rows, in)) return gemv_tc_rows<false>(w, x, rows, in, out, y, nullptr, nullptr);
    if (rows_gemm(rows, in)) return gemm_rows<false>(w, x, rows, in, out, y, nullptr, nullptr);
    blas_gemm(w, x, rows, in, out, y, CUDA_R_32F);
  }
  // y (rows, out) = x W^T through cuBLAS, y in y_type (fp32 accumulation).
  void blas_gemm(const DeviceBuffer& w, const T* x, int64_t rows, int64_t in, int64_t out, void* y, cudaDataType y_type) {
    const float one = 1.0f, zero = 0.0f;
    check(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(out), int(rows), int(in), &one, w.get(),
                       CudaType<T>::value, int(in), x, CudaType<T>::value, int(in), &zero, y, y_type, int(out),
                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx");
  }

  // SwiGLU MLP input: act (rows, inter) = silu(gate) * up of x [W_gate | W_up]^T,
  // fused into the GEMV's epilogue for decode-sized batches.
  void gate_up_swiglu(const DeviceBuffer& w, const T* x, int64_t rows, int64_t in, int64_t inter, const float* bias,
                      float* gu, T* act) {
    if (glu_fused_ && gemv_shape(rows, in)) {
      gpu::GemvArgs<T> a = gemv_args(w, x, in, 2 * inter);
      a.glu_bias = bias;
      a.act = act;
      return launch_gemv<true, false>(rows, a);
    }
    if (glu_fused_ && tensor_core_gemv(rows, in)) return gemv_tc_rows<true>(w, x, rows, in, 2 * inter, nullptr, bias, act);
    if (glu_fused_ && rows_gemm(rows, in)) return gemm_rows<true>(w, x, rows, in, 2 * inter, nullptr, bias, act);
    const dim3 grid(unsigned((inter + 8 * 256 - 1) / (8 * 256)), unsigned(rows));
    if (gemm_path(rows, in) || !glu_rounded_) {
      gemm(w, x, rows, in, 2 * inter, gu);
      return launch_small(gpu::swiglu_rows<float, T>, grid, dim3(256), "swiglu launch", gu, bias, int(inter), act);
    }
    // cuBLAS rounds [gate | up] to T as it stores them (as a T model's own
    // matmul does): half the bytes out and back in.
    T* gu_t = reinterpret_cast<T*>(gu);
    blas_gemm(w, x, rows, in, 2 * inter, gu_t, CudaType<T>::value);
    launch_small(gpu::swiglu_rows<T, T>, grid, dim3(256), "swiglu launch", gu_t, bias, int(inter), act);
  }

  // Small kernels (norms, activation, split combine) are launched as
  // programmatic dependents too: they load their weights and wait, so their
  // launch and set-up overlap the tail of the kernel before them; they let the
  // next kernel launch once they pass that wait (gpu::pdl_wait_then_trigger).
  template <typename... Params, typename... Args>
  void launch_small(void (*kernel)(Params...), dim3 grid, dim3 block, const char* what, Args... args) {
    DependentLaunch dl(grid, block, stream_, pdl_ && pdl_small_);
    check(cudaLaunchKernelEx(&dl.cfg, kernel, args..., pdl_late_), what);
  }

  void norm(const float* x, const int64_t* row_index, int64_t rows, const DeviceBuffer& w, const DeviceBuffer& b, T* y) {
    launch_small(gpu::norm_rows<T>, dim3(unsigned(rows)), dim3(norm_threads_), "norm launch", x, row_index, c_.hidden,
                 w.get<float>(), opt(b), c_.norm_eps, c_.norm == NormKind::RMSNorm, y);
  }

  void ensure_rope(int64_t positions) {
    if (!rope_ || positions <= rope_positions_) return;
    rope_->reserve(positions);
    const int64_t n = rope_->positions() * (c_.rotary_dim / 2);
    rope_cos_.reset(size_t(n) * sizeof(float));
    rope_sin_.reset(size_t(n) * sizeof(float));
    check(cudaMemcpyAsync(rope_cos_.get(), rope_->cos_table(), size_t(n) * sizeof(float), cudaMemcpyHostToDevice, stream_), "rope");
    check(cudaMemcpyAsync(rope_sin_.get(), rope_->sin_table(), size_t(n) * sizeof(float), cudaMemcpyHostToDevice, stream_), "rope");
    if constexpr (sizeof(T) == 2) {  // the tensor-core attention's tables (bf16/fp16 only)
      rope_cos_t_.reset(size_t(n) * sizeof(T));
      rope_sin_t_.reset(size_t(n) * sizeof(T));
      gpu::convert_to<T><<<grid_for(n), 256, 0, stream_>>>(rope_cos_.get<float>(), n, rope_cos_t_.get<T>());
      gpu::convert_to<T><<<grid_for(n), 256, 0, stream_>>>(rope_sin_.get<float>(), n, rope_sin_t_.get<T>());
    }
    check(cudaStreamSynchronize(stream_), "rope");
    rope_positions_ = rope_->positions();
    drop_graphs();
  }

  // Causal attention of the rows [row0, row0 + count) over themselves, in
  // query blocks sized so the fp32 scores stay within kCausalScoreBytes.
  void causal_attention(const float* qkv, int row0, int count) {
    const ModelConfig& c = c_;
    const int G = c.heads / c.kv_heads, hd = c.head_dim;
    const int64_t n_q = int64_t(c.heads) * count * hd, n_kv = int64_t(c.kv_heads) * count * hd;
    cq_.ensure(size_t(n_q) * sizeof(T));
    ck_.ensure(size_t(n_kv) * sizeof(T));
    cv_.ensure(size_t(n_kv) * sizeof(T));
    gpu::causal_prep<T><<<dim3(unsigned(count), unsigned(c.heads + 2 * c.kv_heads)), 128, 0, stream_>>>(
        qkv, row0, count, c.heads, c.kv_heads, hd, rope_ ? c.rotary_dim : 0, c.qkv_dim(),
        rope_ ? rope_cos_.get<float>() : nullptr, rope_ ? rope_sin_.get<float>() : nullptr, cq_.get<T>(), ck_.get<T>(), cv_.get<T>());
    const int64_t qb = std::max<int64_t>(1, std::min<int64_t>(count, kCausalScoreBytes / (int64_t(c.heads) * count * 4)));
    const int64_t max_rows = qb * G;
    cs_.ensure(size_t(c.kv_heads * max_rows * count) * sizeof(float));
    cp_.ensure(size_t(c.kv_heads * max_rows * count) * sizeof(T));
    co_.ensure(size_t(c.kv_heads * max_rows * hd) * sizeof(float));
    const float one = 1.0f, zero = 0.0f;
    for (int64_t a = 0; a < count; a += qb) {
      const int64_t b = std::min<int64_t>(count, a + qb);
      const int64_t m = (b - a) * G;
      check(cublasGemmStridedBatchedEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(b), int(m), hd, &one, ck_.get<T>(),
                                       CudaType<T>::value, hd, int64_t(count) * hd, cq_.get<T>() + a * G * hd,
                                       CudaType<T>::value, hd, int64_t(count) * G * hd, &zero, cs_.get<float>(),
                                       CUDA_R_32F, int(b), m * b, c.kv_heads, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "causal scores");
      gpu::causal_softmax<T><<<dim3(unsigned(m), unsigned(c.kv_heads)), 256, 0, stream_>>>(
          cs_.get<float>(), int(a), int(b), G, c.softmax_scale, alibi_.bytes() ? alibi_.get<float>() : nullptr, cp_.get<T>());
      check(cublasGemmStridedBatchedEx(blas_, CUBLAS_OP_N, CUBLAS_OP_N, hd, int(m), int(b), &one, cv_.get<T>(),
                                       CudaType<T>::value, hd, int64_t(count) * hd, cp_.get<T>(), CudaType<T>::value,
                                       int(b), m * b, &zero, co_.get<float>(), CUDA_R_32F, hd, m * hd, c.kv_heads,
                                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "causal values");
      gpu::causal_scatter<T><<<dim3(unsigned(m), unsigned(c.kv_heads)), 128, 0, stream_>>>(
          co_.get<float>(), row0, int(a), int(b), G, c.heads, hd, attn_.get<T>());
    }
  }

  ModelConfig c_;
  GpuOptions options_;
  std::string name_;
  int sm_count_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  DeviceBuffer blas_ws_;
  size_t attn_smem_ = 0;
  size_t weight_bytes_ = 0;
  std::vector<GpuLayer> layers_;
  DeviceBuffer embed_, lm_head_, final_w_, final_b_, alibi_;
  std::unique_ptr<RopeTable> rope_;
  DeviceBuffer rope_cos_, rope_sin_;
  DeviceBuffer rope_cos_t_, rope_sin_t_;  // in T (bf16/fp16), for the tensor-core attention
  int64_t rope_positions_ = 0;
  DeviceBuffer staging_;
  struct GraphKey {
    int64_t seqs, rows, n_out, nexts, lsm, splits, chunk, rope, lm_fused, next_parts;
    bool operator<(const GraphKey& o) const {
      return std::tie(seqs, rows, n_out, nexts, lsm, splits, chunk, rope, lm_fused, next_parts) <
             std::tie(o.seqs, o.rows, o.n_out, o.nexts, o.lsm, o.splits, o.chunk, o.rope, o.lm_fused, o.next_parts);
    }
  };
  static constexpr size_t kMaxGraphs = 256;
  std::map<GraphKey, cudaGraphExec_t> graphs_;
  void drop_graphs() {
    for (auto& g : graphs_) cudaGraphExecDestroy(g.second);
    graphs_.clear();
  }

  // The attn_decode128_mma instance the knobs select.
  template <int G>
  const void* mma_fn(int blocks) const {
    if (blocks == 3) return reinterpret_cast<const void*>(gpu::attn_decode128_mma<T, G, 3>);
    if (!mma_pipe_) return reinterpret_cast<const void*>(gpu::attn_decode128_mma<T, G, 2, false>);
    if (!mma_perm_) return reinterpret_cast<const void*>(gpu::attn_decode128_mma<T, G, 2, true, false>);
    if (!mma_rope2_) return reinterpret_cast<const void*>(gpu::attn_decode128_mma<T, G, 2, true, true, false>);
    if (!mma_fast_) return reinterpret_cast<const void*>(gpu::attn_decode128_mma<T, G, 2, true, true, true, false>);
    return reinterpret_cast<const void*>(gpu::attn_decode128_mma<T, G, 2>);
  }
  // The attn_decode128 instance for G query heads per KV head.
  // blocks: the tensor-core kernel's register budget, 2 or 3 blocks per SM.
  const void* decode128_fn(int G, int blocks) const {
    if constexpr (sizeof(T) == 2) {
      if (attn_mma_ && G == 4) return mma_fn<4>(blocks);
      if (attn_mma_ && G == 8) return mma_fn<8>(blocks);
    }
    switch (G) {
      case 1:
        if (decode_batch_ == 4) return reinterpret_cast<const void*>(gpu::attn_decode128<T, 1, 4>);
        return reinterpret_cast<const void*>(gpu::attn_decode128<T, 1, gpu::decode_batch<T, 1>()>);
      case 2: return reinterpret_cast<const void*>(gpu::attn_decode128<T, 2, gpu::decode_batch<T, 2>()>);
      case 4:
        if (decode_g4_ == 1) return reinterpret_cast<const void*>(gpu::attn_decode128<T, 4, 4, 4>);
        if (decode_g4_ == 2) return reinterpret_cast<const void*>(gpu::attn_decode128<T, 4, 2, 4>);
        return reinterpret_cast<const void*>(gpu::attn_decode128<T, 4, gpu::decode_batch<T, 4>()>);
      default: return reinterpret_cast<const void*>(gpu::attn_decode128<T, 8, gpu::decode_batch<T, 8>()>);
    }
  }
  // Launched as a programmatic dependent of the qkv GEMV: its first cache
  // loads overlap the GEMV's last wave (the kernel waits before reading QKV).
  void launch_decode128(dim3 grid, const gpu::AttnParams& ap, int G, int blocks) {
    void* args[] = {const_cast<gpu::AttnParams*>(&ap)};
    DependentLaunch dl(grid, dim3(gpu::kThreads), stream_, pdl_);
    cudaLaunchAttribute attrs[2] = {dl.attr, {}};
    if (ap.cluster) {  // a cluster per (row, KV head): its splits
      attrs[dl.cfg.numAttrs] = cluster_attr(grid.x);
      dl.cfg.attrs = attrs;
      dl.cfg.numAttrs += 1;
    }
    check(cudaLaunchKernelExC(&dl.cfg, decode128_fn(G, blocks), args), "attention launch");
  }
  static cudaLaunchAttribute cluster_attr(unsigned blocks) {
    cudaLaunchAttribute a{};
    a.id = cudaLaunchAttributeClusterDimension;
    a.val.clusterDim.x = blocks;
    a.val.clusterDim.y = 1;
    a.val.clusterDim.z = 1;
    return a;
  }
  // Decode steps of the scalar head_dim-128 attention with 2-16 splits
  // merge them in thread-block clusters (gpu::cluster_merge) when every
  // cluster of the step is resident at once: Llama-2-7B at 8 sessions (2
  // splits) 81.0-81.1% of the roofline against 80.5-80.7% with attn_combine;
  // at batch 1 its 32 clusters of 16 exceed the 28 an H100 holds, and a
  // second wave cost 5 points (bench/results/gpu/host-step/call5, call6).
  // STREAMSINK_ATTN_CLUSTER=0 turns it off.
  bool use_cluster(int G, int blocks, int64_t splits, int64_t clusters) {
    if (!attn_cluster_ || splits < 2 || splits > gpu::kClusterSplits) return false;
    auto it = cluster_capacity_.find({G, int(splits)});
    if (it == cluster_capacity_.end()) {
      const void* fn = decode128_fn(G, blocks);
      int n = 0;
      if (cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess) {
        cudaLaunchConfig_t cfg{};
        cfg.gridDim = dim3(unsigned(splits), 1, 1);
        cfg.blockDim = dim3(gpu::kThreads);
        cudaLaunchAttribute a = cluster_attr(unsigned(splits));
        cfg.attrs = &a;
        cfg.numAttrs = 1;
        if (cudaOccupancyMaxActiveClusters(&n, fn, &cfg) != cudaSuccess) n = 0;
      }
      cudaGetLastError();  // a refusal above is an answer, not an error
      if (std::getenv("STREAMSINK_ATTN_CLUSTER"))
        std::fprintf(stderr, "streamsink: attention clusters of %lld blocks (%d query heads per KV head): %d resident\n",
                     (long long)splits, G, n);
      it = cluster_capacity_.emplace(std::make_pair(G, int(splits)), n).first;
    }
    return clusters <= it->second;
  }
  const bool attn_cluster_ = env_int("STREAMSINK_ATTN_CLUSTER", 1) != 0;
  std::map<std::pair<int, int>, int> cluster_capacity_;  // (G, splits) -> clusters resident at once
  // Blocks of attn_decode128 resident on the whole GPU at once.
  int64_t decode128_resident(int G, int blocks) {
    int& n = decode_occupancy_[blocks == 3][G == 1 ? 0 : G == 2 ? 1 : G == 4 ? 2 : 3];
    if (n == 0) {
      check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, decode128_fn(G, blocks), gpu::kThreads, 0),
            "occupancy query");
      n = std::max(n, 1);
    }
    return int64_t(n) * sm_count_;
  }
  int decode_occupancy_[2][4] = {};
  // The tensor-core attention's register budget for a step of base_blocks
  // (rows x KV heads) blocks before splitting: 3 blocks per SM (168
  // registers, a few spills) pays only when there are many waves of blocks
  // (bench/results/gpu/split-fill/). STREAMSINK_ATTN_MMA_BLOCKS=2|3 fixes it.
  int mma_blocks_for(int64_t base_blocks) const {
    if (mma_blocks_ == 2 || mma_blocks_ == 3) return mma_blocks_;
    return base_blocks >= int64_t(mma_wide_per_sm_) * sm_count_ ? 3 : 2;
  }
  // Tuning knobs for measurements (STREAMSINK_ATTN_BATCH=4|8,
  // STREAMSINK_ATTN_G4=0|1|2, STREAMSINK_ATTN_CHUNK=least entries per split
  // block, STREAMSINK_ATTN_BLOCKS=blocks per SM to split for instead of the
  // kernel's occupancy); defaults are the measured best.
  static int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : fallback;
  }
  const int norm_threads_ = gpu::norm_threads(c_.hidden);
  // RMSNorm folded into the matrix after it (W diag(w), fp32 product rounded
  // once to T), so a decode step of up to 4 rows has no norm kernels: the
  // qkv and gate/up GEMVs scale by rsqrt(mean(x^2) + eps) of the residual
  // stream they read, and o_proj/down add their output to it in place.
  // Other steps run the norm kernels with unit weights (ones_).
  // STREAMSINK_NORM_FOLD=0 keeps the norm kernels.
  const bool fold_norms_ = env_int("STREAMSINK_NORM_FOLD", 1) != 0 && c_.norm == NormKind::RMSNorm && !c_.norm_bias &&
                           !c_.parallel_residual && c_.activation == Activation::SwiGLU;
  DeviceBuffer ones_;  // hidden x 1.0f, the folded norms' weight
  // The final norm's weight folded into an untied LM head the same way, so a
  // decode step of up to 4 rows goes from the last layer to the logits in one
  // GEMV (STREAMSINK_LM_FOLD=0: not folded).
  const bool lm_fold_ = env_int("STREAMSINK_LM_FOLD", 1) != 0;
  bool lm_folded_ = false;
  const DeviceBuffer& norm1_w(const GpuLayer& g) const { return fold_norms_ ? ones_ : g.norm1_w; }
  const DeviceBuffer& norm2_w(const GpuLayer& g) const { return fold_norms_ ? ones_ : g.norm2_w; }
  const DeviceBuffer& final_norm_w() const { return lm_folded_ ? ones_ : final_w_; }
  const bool pdl_ = env_int("STREAMSINK_PDL", 1) != 0;
  const bool pdl_small_ = env_int("STREAMSINK_PDL_SMALL", 1) != 0;  // 0: norms etc. launched plainly
  const bool pdl_late_ = env_int("STREAMSINK_PDL_LATE", 1) != 0;    // 0: they trigger at their start
  const bool glu_fused_ = env_int("STREAMSINK_GLU_FUSED", 1) != 0;  // 0: GEMV then swiglu_rows
  // 0: cuBLAS's [gate | up] stays fp32 (1: rounded to T; fp32 models always fp32).
  const bool glu_rounded_ = sizeof(T) == 2 && env_int("STREAMSINK_GLU_ROUNDED", 1) != 0;
  const int gemv_mma_rows_ = env_int("STREAMSINK_GEMV_MMA", 8);  // most rows for gemv_mma (0: cuBLAS above 4)
  // Most rows for gemm_rows (0: cuBLAS). Measured on Mistral-7B (bench/
  // results/gpu/gemm-tri/ab1.log, ab2.log): 16 rows 81.0-81.4% of the roofline
  // against cuBLAS's 70.7-74.2%, 32 rows 75.2-75.9% against 70.9-72.7%; 33-64
  // rows are not measured with the two-stage pipeline, so cuBLAS keeps them.
  const int gemm_rows_max_ = env_int("STREAMSINK_GEMM_ROWS", 32);
  const int gemm_rows_blocks_ = env_int("STREAMSINK_GEMM_ROWS_BLOCKS", 0);  // grid size for tests (0: resident slots)
  DeviceBuffer rows_ws_, rows_counters_;  // gemm_rows's split-K partial tiles and arrival counters
  // STREAMSINK_ABLATE=qkv,attention,combine,oproj,norm,gateup,down leaves
  // those kernels out of every layer, and `download` leaves out the logits'
  // copy to the host: for timing what each costs inside a graph replay only
  // (the results are wrong).
  enum class Part { Qkv = 1, Attention = 2, Combine = 4, OProj = 8, Norm = 16, GateUp = 32, Down = 64, Download = 128 };
  static int parse_ablate() {
    const char* v = std::getenv("STREAMSINK_ABLATE");
    const std::string list = v ? "," + std::string(v) + "," : "";
    int mask = 0;
    const std::pair<const char*, Part> names[] = {{"qkv", Part::Qkv},       {"attention", Part::Attention},
                                                  {"combine", Part::Combine}, {"oproj", Part::OProj},
                                                  {"norm", Part::Norm},     {"gateup", Part::GateUp},
                                                  {"down", Part::Down},     {"download", Part::Download}};
    for (const auto& [name, part] : names)
      if (list.find("," + std::string(name) + ",") != std::string::npos) mask |= int(part);
    return mask;
  }
  const int ablate_ = parse_ablate();
  bool on(Part p) const { return (ablate_ & int(p)) == 0; }
  const int decode_batch_ = env_int("STREAMSINK_ATTN_BATCH", 8);
  const int decode_g4_ = env_int("STREAMSINK_ATTN_G4", 0);
  // Tensor-core attention for 4 and 8 query heads per KV head (bf16/fp16);
  // STREAMSINK_ATTN_MMA=0 selects the scalar kernel instead.
  const bool attn_mma_ = env_int("STREAMSINK_ATTN_MMA", 1) != 0;
  const int mma_blocks_ = env_int("STREAMSINK_ATTN_MMA_BLOCKS", 0);  // register budget: 2 or 3 blocks per SM (0: by batch)
  // STREAMSINK_ATTN_WIDE=n: 3 blocks per SM from n unsplit blocks per SM on.
  const int mma_wide_per_sm_ = env_int("STREAMSINK_ATTN_WIDE", 8);
  // STREAMSINK_ATTN_MERGE=n: decode steps with at most n splits merge them in
  // the attention kernel (gpu::finish_split) instead of attn_combine. With
  // no combine the o_proj GEMV is the attention's programmatic dependent and
  // streams its weights while the attention runs (ATTN_TRIGGER).
  const int attn_merge_max_ = env_int("STREAMSINK_ATTN_MERGE", 16);
  // STREAMSINK_NEXT_PARTS=n: at most n blocks per sequence take the next token (1: one).
  const int next_parts_max_ = std::max(1, env_int("STREAMSINK_NEXT_PARTS", 32));
  // STREAMSINK_ATTN_PREFETCH=0: the scalar head_dim-128 decode kernel loads
  // its first batch of cached entries after griddepcontrol.wait instead of
  // before. STREAMSINK_ATTN_TRIGGER=0: the decode attention kernels let
  // their dependent launch only as they end instead of from their start.
  const bool attn_prefetch_ = env_int("STREAMSINK_ATTN_PREFETCH", 1) != 0;
  const bool attn_trigger_ = env_int("STREAMSINK_ATTN_TRIGGER", 1) != 0;
  // Each turns one feature of the tensor-core attention off (for A/B):
  // STREAMSINK_ATTN_PIPE=0 loads a tile's K and V together after the last
  // one's P V (not K after Q K^T and V after P V, the first tile before the
  // wait); STREAMSINK_ATTN_PERM=0 has lanes read contiguous 32-byte runs;
  // STREAMSINK_ATTN_ROPE2=0 rotates the keys in fp32 (fp32 tables) instead
  // of in T pairs; STREAMSINK_ATTN_FAST=0 addresses every entry on its own
  // instead of whole tiles of consecutive cached slots from one base.
  const bool mma_pipe_ = env_int("STREAMSINK_ATTN_PIPE", 1) != 0;
  const bool mma_perm_ = env_int("STREAMSINK_ATTN_PERM", 1) != 0;
  const bool mma_rope2_ = env_int("STREAMSINK_ATTN_ROPE2", 1) != 0;
  const bool mma_fast_ = env_int("STREAMSINK_ATTN_FAST", 1) != 0;
  const int attn_min_chunk_ = env_int("STREAMSINK_ATTN_CHUNK", 0);
  const int attn_blocks_per_sm_ = env_int("STREAMSINK_ATTN_BLOCKS", 0);
  // STREAMSINK_ATTN_FILL=percent: how full the attention's last wave of
  // blocks must be before the split chooser stops adding splits.
  const double attn_fill_ = env_int("STREAMSINK_ATTN_FILL", 95) / 100.0;

  struct CausalChunk {
    int32_t row0, count;
  };
  static constexpr int64_t kCausalMinRows = 16;
  static constexpr int64_t kCausalScoreBytes = int64_t(512) << 20;
  std::vector<CausalChunk> causal_;
  DeviceBuffer cq_, ck_, cv_, cs_, cp_, co_;
  // Step workspace.
  DeviceBuffer meta_, x_, h_, h2_, qkv_, attn_, a_, up_, act_, m_, partial_, normed_, logits_, next_;
  DeviceBuffer next_stats_, next_counters_;  // next_top's per-part statistics and arrivals
  DeviceBuffer attn_counters_;  // (rows, kv_heads) arrivals for the in-kernel split merge
  PinnedBuffer host_meta_, host_logits_, host_next_;  // descriptors up; logits and next tokens down
  const bool step_timing_ = env_int("STREAMSINK_STEP_TIMING", 0) != 0;
  cudaEvent_t step_begin_ = nullptr, step_end_ = nullptr;
  double step_ms_ = 0;
  int64_t step_count_ = 0;
};

template <typename T>
void CudaModel<T>::forward(std::vector<ForwardSequence>& seqs) {
  const ModelConfig& c = c_;
  const int64_t H = c.hidden, V = c.vocab_size, I = c.intermediate, hd = c.head_dim;
  const int64_t qkv_dim = c.qkv_dim(), attn_dim = int64_t(c.heads) * hd;
  const int64_t up_dim = c.activation == Activation::SwiGLU ? 2 * I : I;
  check(cudaSetDevice(options_.device), "cudaSetDevice");

  // Descriptors: sequences, rows, tokens, output rows; one upload.
  int64_t rows = 0, n_out = 0, max_n = 0, max_pos = 0;
  causal_.clear();
  for (ForwardSequence& q : seqs) {
    rows += q.count;
    if (q.count > 0) n_out += q.all_logits ? q.count : 1;
  }
  if (rows == 0) return;
  std::vector<gpu::SeqDesc> sd(seqs.size());
  std::vector<gpu::RowDesc> rd(static_cast<size_t>(rows));
  std::vector<int32_t> tokens(static_cast<size_t>(rows));
  // Output rows: those of sequences whose logits are copied to the host
  // first (one download), then the rest.
  std::vector<int64_t> out_rows;
  out_rows.reserve(size_t(n_out));
  std::vector<int64_t> out_at(seqs.size(), -1);  // a sequence's first row in the step's logits
  int64_t n_copy = 0;
  for (int pass = 0; pass < 2; ++pass) {
    int64_t r0 = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const ForwardSequence& q = seqs[i];
      const int64_t first = r0;
      r0 += q.count;
      if (q.count == 0 || (q.logits != nullptr) != (pass == 0)) continue;
      out_at[i] = int64_t(out_rows.size());
      if (q.all_logits)
        for (int64_t j = 0; j < q.count; ++j) out_rows.push_back(first + j);
      else
        out_rows.push_back(first + q.count - 1);
    }
    if (pass == 0) n_copy = int64_t(out_rows.size());
  }
  std::vector<gpu::NextDesc> nd;  // per sequence with tokens
  nd.reserve(seqs.size());
  std::vector<int64_t> lsm;  // rows turned into their log-softmax by logsoftmax_rows (q.logprobs, all but the last)
  int64_t row = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    ForwardSequence& q = seqs[i];
    KvCache& cache = *q.cache;
    const CacheShape& shape = cache.shape();
    const int64_t first = cache.tokens();
    if (q.count > 0) cache.reserve_tokens(first + q.count);
    if (!q.discard_kv && q.count > 0) ensure_device(cache);
    DeviceKv* dk = device_of(cache);
    gpu::SeqDesc& s = sd[i];
    s.first_token = first;
    s.slots = dk ? dk->slots : 0;
    s.k = dk ? dk->k.get() : nullptr;
    s.v = dk ? dk->v.get() : nullptr;
    s.count = int32_t(q.count);
    s.row0 = int32_t(row);
    s.bounded = shape.bounded() ? 1 : 0;
    s.sinks = int32_t(shape.sinks);
    s.window = int32_t(shape.window);
    s.store = q.discard_kv ? 0 : 1;
    if (q.discard_kv && first != 0)
      throw EngineError(ErrorCode::InvalidArgument, "CUDA: a discarded cache must start empty");
    // A chunk that starts an empty cache and fits in it is plain causal
    // attention: batched GEMMs (causal_attention) instead of context scans.
    const bool causal = first == 0 && q.count >= kCausalMinRows && (!shape.bounded() || q.count <= shape.capacity());
    if (causal) causal_.push_back({s.row0, int32_t(q.count)});
    for (int64_t j = 0; j < q.count; ++j, ++row) {
      const int64_t t = first + j;
      gpu::RowDesc& r = rd[size_t(row)];
      r.t = t;
      r.seq = int32_t(i);
      r.n = causal ? 0 : int32_t(shape.visible(t));
      tokens[size_t(row)] = q.tokens[j];
      if (causal) continue;
      max_n = std::max(max_n, shape.visible(t));
    }
    max_pos = std::max(max_pos, shape.visible(first + q.count - 1));
    if (q.count > 0) {
      const int64_t last = out_at[i] + (q.all_logits ? q.count - 1 : 0);
      const bool lp = q.logprobs && q.logits;
      nd.push_back({last, !q.discard_kv && dk ? dk->next.get<float>() : nullptr, lp ? 1 : 0});
      if (lp)
        for (int64_t j = out_at[i]; j < last; ++j) lsm.push_back(j);
    }
  }
  ensure_rope(std::max<int64_t>(max_pos, 2));  // position 1 is the decode kernel's step rotation

  const size_t sd_bytes = sd.size() * sizeof(gpu::SeqDesc), rd_bytes = rd.size() * sizeof(gpu::RowDesc);
  const size_t tok_bytes = tokens.size() * sizeof(int32_t), out_bytes = out_rows.size() * sizeof(int64_t);
  const size_t nd_bytes = nd.size() * sizeof(gpu::NextDesc), lsm_bytes = lsm.size() * sizeof(int64_t);
  auto align = [](size_t b) { return (b + 15) & ~size_t(15); };
  const size_t o_rd = align(sd_bytes), o_tok = o_rd + align(rd_bytes), o_out = o_tok + align(tok_bytes);
  const size_t o_nd = o_out + align(out_bytes), o_lsm = o_nd + align(nd_bytes);
  const size_t meta_bytes = o_lsm + lsm_bytes;
  host_meta_.ensure(meta_bytes, size_t(1) << 16);
  uint8_t* hm = host_meta_.get<uint8_t>();
  std::memcpy(hm, sd.data(), sd_bytes);
  std::memcpy(hm + o_rd, rd.data(), rd_bytes);
  std::memcpy(hm + o_tok, tokens.data(), tok_bytes);
  std::memcpy(hm + o_out, out_rows.data(), out_bytes);
  std::memcpy(hm + o_nd, nd.data(), nd_bytes);
  std::memcpy(hm + o_lsm, lsm.data(), lsm_bytes);
  if (meta_.ensure(meta_bytes)) drop_graphs();
  if (step_timing_) check(cudaEventRecord(step_begin_, stream_), "step timing");
  check(cudaMemcpyAsync(meta_.get(), hm, meta_bytes, cudaMemcpyHostToDevice, stream_), "descriptor upload");
  const auto* d_seqs = reinterpret_cast<const gpu::SeqDesc*>(meta_.get<uint8_t>());
  const auto* d_rows = reinterpret_cast<const gpu::RowDesc*>(meta_.get<uint8_t>() + o_rd);
  const auto* d_tokens = reinterpret_cast<const int32_t*>(meta_.get<uint8_t>() + o_tok);
  const auto* d_out = reinterpret_cast<const int64_t*>(meta_.get<uint8_t>() + o_out);
  const auto* d_next = reinterpret_cast<const gpu::NextDesc*>(meta_.get<uint8_t>() + o_nd);
  const auto* d_lsm = reinterpret_cast<const int64_t*>(meta_.get<uint8_t>() + o_lsm);

  // Attention split: enough blocks to fill the GPU even for one session.
  const int G = c.heads / c.kv_heads;
  const bool fast_attn = hd == 128 && (!rope_ || c.rotary_dim == 128) && (G == 1 || G == 2 || G == 4 || G == 8);
  // Fast kernel: split so that all blocks are resident at once (one wave:
  // a second, partial wave would leave SMs idle at its end), with at least
  // 128 entries per block (64 for 4-8 query heads per KV head, whose kernel
  // fits fewer blocks per SM), so the prologue and the partial write stay
  // small against the streaming. Generic kernel: four blocks per SM wanted.
  const int64_t base_blocks = rows * c.kv_heads;
  const int attn_blocks = mma_blocks_for(base_blocks);
  int64_t min_chunk = gpu::kTile, splits = 1;
  if (fast_attn) {
    min_chunk = attn_min_chunk_ > 0 ? attn_min_chunk_ : (G >= 4 ? 64 : 128);
    const int64_t resident =
        attn_blocks_per_sm_ > 0 ? int64_t(attn_blocks_per_sm_) * sm_count_ : decode128_resident(G, attn_blocks);
    // The fewest splits whose last wave of blocks is at least 95% full, or
    // else the fullest: Llama-2-7B at 8 sessions 2 splits (0.97 of two
    // waves), Mistral-7B at 32 sessions 3 (768 blocks, 1.94 waves of 396).
    const int64_t most = std::min<int64_t>(gpu::kMaxSplits, std::max<int64_t>(1, (max_n + min_chunk - 1) / min_chunk));
    double best_fill = -1.0;
    for (int64_t k = 1; k <= most; ++k) {
      const double waves = double(base_blocks * k) / double(resident);
      const double fill = waves / std::ceil(waves);
      if (fill >= attn_fill_) {
        splits = k;
        break;
      }
      if (fill > best_fill) {
        best_fill = fill;
        splits = k;
      }
    }
  } else {
    const int64_t want_blocks = 4 * int64_t(sm_count_);
    splits = std::max<int64_t>(1, (want_blocks + base_blocks - 1) / base_blocks);
  }
  splits = std::min<int64_t>(splits, gpu::kMaxSplits);
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, (max_n + min_chunk - 1) / min_chunk));
  max_n = std::max<int64_t>(max_n, 1);
  int64_t chunk = (max_n + splits - 1) / splits;
  chunk = (chunk + gpu::kTile - 1) / gpu::kTile * gpu::kTile;
  splits = (max_n + chunk - 1) / chunk;

  bool moved = false;
  moved |= x_.ensure(size_t(rows * H) * sizeof(float));
  moved |= h_.ensure(size_t(rows * H) * sizeof(T));
  moved |= qkv_.ensure(size_t(rows * qkv_dim) * sizeof(float));
  moved |= attn_.ensure(size_t(rows * attn_dim) * sizeof(T));
  moved |= a_.ensure(size_t(rows * H) * sizeof(float));
  moved |= up_.ensure(size_t(rows * up_dim) * sizeof(float));
  moved |= act_.ensure(size_t(rows * I) * sizeof(T));
  moved |= m_.ensure(size_t(rows * H) * sizeof(float));
  moved |= partial_.ensure(size_t(rows * c.heads * splits * (hd + 2)) * sizeof(float));
  if (attn_counters_.ensure(size_t(rows * c.kv_heads) * sizeof(int))) {
    check(cudaMemsetAsync(attn_counters_.get(), 0, attn_counters_.bytes(), stream_), "counter reset");
    moved = true;
  }
  if (c.parallel_residual && c.mlp_norm_separate) moved |= h2_.ensure(size_t(rows * H) * sizeof(T));
  moved |= normed_.ensure(size_t(n_out * H) * sizeof(T));
  moved |= logits_.ensure(size_t(n_out * V) * sizeof(float));
  moved |= next_.ensure(nd.size() * sizeof(gpu::NextTop));
  // next_top's blocks per sequence: enough to spread a few rows over the
  // SMs, or one when a row becomes its log-softmax in place (only the last
  // block of a sequence knows the log-sum-exp).
  bool any_inplace = false;
  for (const gpu::NextDesc& d : nd) any_inplace |= d.inplace != 0;
  const int next_parts = any_inplace ? 1
                                     : int(std::clamp<int64_t>(sm_count_ / std::max<int64_t>(1, int64_t(nd.size())), 1,
                                                               std::min(next_parts_max_, 32)));
  const int64_t next_slice = (V + next_parts - 1) / next_parts;
  const int next_threads = int(std::clamp<int64_t>((next_slice / 4 + 31) / 32 * 32, 128, 1024));
  moved |= next_stats_.ensure(nd.size() * size_t(next_parts) * 3 * sizeof(float));
  if (next_counters_.ensure(nd.size() * sizeof(int))) {
    check(cudaMemsetAsync(next_counters_.get(), 0, next_counters_.bytes(), stream_), "counter reset");
    moved = true;
  }
  moved |= reserve_rows_gemm(rows, n_out, qkv_dim, attn_dim, up_dim);
  if (moved) drop_graphs();

  float* x = x_.get<float>();
  T* h = h_.get<T>();
  float* qkv = qkv_.get<float>();

  gpu::AttnParams ap{};
  ap.seqs = d_seqs;
  ap.rows = d_rows;
  ap.qkv = qkv;
  ap.partial = partial_.get<float>();
  ap.rope_cos = rope_ ? rope_cos_.get<float>() : nullptr;
  ap.rope_sin = rope_ ? rope_sin_.get<float>() : nullptr;
  ap.rope_cos_t = rope_ ? rope_cos_t_.get() : nullptr;
  ap.rope_sin_t = rope_ ? rope_sin_t_.get() : nullptr;
  ap.alibi = alibi_.bytes() ? alibi_.get<float>() : nullptr;
  ap.heads = c.heads;
  ap.kv_heads = c.kv_heads;
  ap.head_dim = c.head_dim;
  ap.rotary_dim = rope_ ? c.rotary_dim : 0;
  ap.qkv_dim = int(qkv_dim);
  ap.splits = int(splits);
  ap.chunk = int(chunk);
  ap.scale = c.softmax_scale;
  // Decode steps only: within a prefill chunk a row's K/V must not land in
  // the cache while another row of its session still reads that slot.
  ap.merge = fast_attn && causal_.empty() && rows == int64_t(seqs.size()) &&
             splits <= std::min(attn_merge_max_, gpu::kMergeSplits);
  ap.prefetch = attn_prefetch_;
  ap.trigger = attn_trigger_;
  ap.counters = attn_counters_.get<int>();
  ap.out = attn_.get<T>();
  const bool mma_attn = sizeof(T) == 2 && attn_mma_ && (G == 4 || G == 8);
  ap.cluster = fast_attn && !mma_attn && causal_.empty() && rows == int64_t(seqs.size()) &&
               use_cluster(G, attn_blocks, splits, rows * c.kv_heads);
  if (ap.cluster) ap.merge = false;
  const dim3 attn_grid(unsigned(splits), unsigned(c.kv_heads), unsigned(rows));

  // Up to 4 rows with the norms folded: no norm kernels in the layers.
  const bool fused_norm = fold_norms_ && gemv_shape(rows, H) && gemv_shape(rows, I) && gemv_shape(rows, attn_dim);

  // Every row's logits, in row order: the LM head GEMV normalizes x itself.
  bool in_order = n_out == rows;
  for (int64_t j = 0; in_order && j < n_out; ++j) in_order = out_rows[size_t(j)] == j;
  const bool lm_fused = fused_norm && lm_folded_ && in_order;

  // Everything from the embedding to the logits, enqueued on stream_ (or
  // captured once into a CUDA graph per step shape and replayed).
  auto enqueue = [&]() {
  gpu::embed_rows<T><<<int(rows), 256, 0, stream_>>>(d_tokens, embed_.get<T>(), int(H), x);
  const bool rms = c.norm == NormKind::RMSNorm;
  if (!fused_norm) norm(x, nullptr, rows, norm1_w(layers_[0]), layers_[0].norm1_b, h);
  for (int l = 0; l < c.layers; ++l) {
    GpuLayer& w = layers_[size_t(l)];
    // h holds norm1(x) here (the previous layer's tail computed it), or with
    // fused_norm the qkv GEMV normalizes x itself.
    if (!on(Part::Qkv)) {
    } else if (fused_norm) {
      gpu::GemvArgs<T> a = gemv_args(w.wqkv, x, H, qkv_dim);
      a.Y = qkv;
      a.rms_eps = c.norm_eps;
      launch_gemv<false, true>(rows, a);
    } else {
      gemm(w.wqkv, h, rows, H, qkv_dim, qkv);
    }
    if (w.bqkv.bytes() || c.clip_qkv > 0)
      launch_small(gpu::bias_clip, dim3(grid_for(rows * qkv_dim)), dim3(256), "bias launch", qkv, rows * qkv_dim, int(qkv_dim),
                   opt(w.bqkv), c.clip_qkv);
    ap.layer = l;
    for (const CausalChunk& cc : causal_) causal_attention(qkv, cc.row0, cc.count);
    if (!on(Part::Attention)) {
    } else if (fast_attn) launch_decode128(attn_grid, ap, G, attn_blocks);
    else gpu::attn_split<T><<<attn_grid, gpu::kThreads, attn_smem_, stream_>>>(ap);
    if (on(Part::Combine) && !ap.merge && !ap.cluster)
      launch_small(gpu::attn_combine<T>, dim3(unsigned(c.heads), unsigned(rows)), dim3(128), "combine launch",
                   d_seqs, d_rows, qkv, l, c.kv_heads, int(qkv_dim), ap.partial, c.heads, c.head_dim, int(splits),
                   int(chunk), attn_.get<T>());
    if (!on(Part::OProj)) {
    } else if (fused_norm) {  // x += attention output W_o^T (+ b_o)
      gpu::GemvArgs<T> a = gemv_args(w.wo, attn_.get<T>(), attn_dim, H);
      a.resid = x;
      a.resid_bias = opt(w.bo);
      launch_gemv<false, false>(rows, a);
    } else {
      gemm(w.wo, attn_.get<T>(), rows, attn_dim, H, a_.get<float>());
    }

    const T* mlp_in = h;
    if (c.parallel_residual) {
      if (c.mlp_norm_separate) {
        norm(x, nullptr, rows, w.norm2_w, w.norm2_b, h2_.get<T>());
        mlp_in = h2_.get<T>();
      }
    } else if (on(Part::Norm) && !fused_norm) {
      launch_small(gpu::residual_norm<T>, dim3(unsigned(rows)), dim3(norm_threads_), "norm launch", x, int(H),
                   a_.get<float>(), opt(w.bo), nullptr, nullptr, norm2_w(w).template get<float>(), opt(w.norm2_b),
                   c.norm_eps, rms, h);
    }
    if (!on(Part::GateUp)) {
    } else if (fused_norm) {
      gpu::GemvArgs<T> a = gemv_args(w.w_up, x, H, 2 * I);
      a.glu_bias = opt(w.b_up);
      a.act = act_.get<T>();
      a.rms_eps = c.norm_eps;
      launch_gemv<true, true>(rows, a);
    } else if (c.activation == Activation::SwiGLU) {
      gate_up_swiglu(w.w_up, mlp_in, rows, H, I, opt(w.b_up), up_.get<float>(), act_.get<T>());
    } else {
      gemm(w.w_up, mlp_in, rows, H, up_dim, up_.get<float>());
      launch_small(gpu::gelu_rows<T>, dim3(grid_for(rows * I)), dim3(256), "gelu launch",
                   up_.get<float>(), opt(w.b_up), rows, int(I), act_.get<T>());
    }
    if (!on(Part::Down)) {
    } else if (fused_norm) {  // x += activation W_down^T (+ b_down): the layer's residual, done
      gpu::GemvArgs<T> a = gemv_args(w.w_down, act_.get<T>(), I, H);
      a.resid = x;
      a.resid_bias = opt(w.b_down);
      launch_gemv<false, false>(rows, a);
      continue;
    } else {
      gemm(w.w_down, act_.get<T>(), rows, I, H, m_.get<float>());
    }
    // Residual, fused with the next layer's input norm.
    const float* ra = c.parallel_residual ? a_.get<float>() : m_.get<float>();
    const float* rba = c.parallel_residual ? opt(w.bo) : opt(w.b_down);
    const float* rm = c.parallel_residual ? m_.get<float>() : nullptr;
    const float* rbm = c.parallel_residual ? opt(w.b_down) : nullptr;
    if (l + 1 < c.layers && !on(Part::Norm)) {
    } else if (l + 1 < c.layers) {
      const GpuLayer& nx = layers_[size_t(l + 1)];
      launch_small(gpu::residual_norm<T>, dim3(unsigned(rows)), dim3(norm_threads_), "norm launch", x, int(H), ra, rba, rm,
                   rbm, norm1_w(nx).template get<float>(), opt(nx.norm1_b), c.norm_eps, rms, h);
    } else {
      launch_small(gpu::residual_add, dim3(grid_for(rows * H)), dim3(256), "residual launch", x, rows * H, int(H), ra, rba, rm,
                   rbm);
    }
  }

  // Final norm and LM head for the rows whose logits are wanted.
  if (lm_fused) {
    gpu::GemvArgs<T> a = gemv_args(lm_head_, x, H, V);
    a.Y = logits_.get<float>();
    a.rms_eps = c.norm_eps;
    launch_gemv<false, true>(rows, a);
  } else {
    norm(x, d_out, n_out, final_norm_w(), final_b_, normed_.get<T>());
    gemm(lm_head_.bytes() ? lm_head_ : embed_, normed_.get<T>(), n_out, H, V, logits_.get<float>());
  }
  // Each sequence's next token, and its distribution kept on the device.
  {
    DependentLaunch dl(dim3(unsigned(next_parts), unsigned(nd.size())), dim3(unsigned(next_threads)), stream_, pdl_);
    check(cudaLaunchKernelEx(&dl.cfg, gpu::next_top, logits_.get<float>(), V, d_next, next_.get<gpu::NextTop>(),
                             next_stats_.get<float>(), next_counters_.get<int>()),
          "next_top launch");
  }
  if (!lsm.empty()) {  // the other rows whose log-probs the caller takes
    gpu::logsoftmax_rows<<<unsigned(lsm.size()), 1024, 0, stream_>>>(logits_.get<float>(), V, d_lsm);
    check(cudaGetLastError(), "logsoftmax launch");
  }
  };

  // Host buffers for what comes back, before the step is launched (a failed
  // allocation leaves the sessions' device state untouched). Only the rows
  // asked for come back (they lead the logits), and each sequence's next
  // token: 8 bytes for a decoding session that samples greedily, against
  // 4 x vocab for its whole distribution.
  const size_t logit_bytes = size_t(n_copy * V) * sizeof(float), next_bytes = nd.size() * sizeof(gpu::NextTop);
  host_logits_.ensure(logit_bytes);
  host_next_.ensure(next_bytes, 4096);
  // Graphs for decode steps only (one token per sequence): their shapes
  // repeat step after step, while prefill chunk sizes vary.
  if (options_.graphs && causal_.empty() && rows == int64_t(seqs.size())) {
    const GraphKey key{int64_t(seqs.size()), rows, n_out, int64_t(nd.size()), int64_t(lsm.size()), splits, chunk, rope_positions_,
                       lm_fused ? 1 : 0, next_parts};
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      if (graphs_.size() >= kMaxGraphs) drop_graphs();
      cudaGraph_t graph = nullptr;
      check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "graph capture");
      try {
        enqueue();
      } catch (...) {
        cudaStreamEndCapture(stream_, &graph);
        if (graph) cudaGraphDestroy(graph);
        throw;
      }
      check(cudaStreamEndCapture(stream_, &graph), "graph capture");
      if (const char* dot = std::getenv("STREAMSINK_GRAPH_DOT"))  // the captured step, for inspection
        cudaGraphDebugDotPrint(graph, dot, cudaGraphDebugDotFlagsKernelNodeParams | cudaGraphDebugDotFlagsKernelNodeAttributes);
      cudaGraphExec_t exec = nullptr;
      const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      check(e, "graph instantiate");
      it = graphs_.emplace(key, exec).first;
    }
    check(cudaGraphLaunch(it->second, stream_), "graph launch");
  } else {
    enqueue();
  }
  if (logit_bytes > 0 && on(Part::Download))
    check(cudaMemcpyAsync(host_logits_.get(), logits_.get(), logit_bytes, cudaMemcpyDeviceToHost, stream_), "logits download");
  check(cudaMemcpyAsync(host_next_.get(), next_.get(), next_bytes, cudaMemcpyDeviceToHost, stream_), "next-token download");
  if (step_timing_) check(cudaEventRecord(step_end_, stream_), "step timing");
  check(cudaStreamSynchronize(stream_), "forward");
  if (step_timing_) {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, step_begin_, step_end_), "step timing");
    step_ms_ += ms;
    ++step_count_;
  }
  check(cudaGetLastError(), "forward kernels");

  size_t k = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    ForwardSequence& q = seqs[i];
    if (q.count == 0) continue;
    q.cache->set_tokens(q.cache->tokens() + q.count);
    const int64_t n = q.all_logits ? q.count : 1;
    if (q.logits && on(Part::Download))
      std::memcpy(q.logits, host_logits_.get<float>() + out_at[i] * V, sizeof(float) * size_t(n * V));
    const gpu::NextTop& top = host_next_.get<gpu::NextTop>()[k];
    if (q.next_token) *q.next_token = top.token;
    if (q.next_logprob) *q.next_logprob = top.logprob;
    ++k;
  }
}

}  // namespace

bool cuda_compiled() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void require_cuda_backend() {
  if (cuda_device_count() == 0)
    throw EngineError(ErrorCode::BackendUnavailable, "CUDA backend requested but no CUDA device is visible");
}

namespace {
template <typename T>
std::unique_ptr<GpuBackend> make_uploaded(const Model& model, const GpuOptions& options) {
  auto m = std::make_unique<CudaModel<T>>(model.config(), options);
  m->upload_from(model);
  return m;
}
template <typename T>
std::unique_ptr<GpuBackend> make_random(const ModelConfig& config, const GpuOptions& options, uint64_t seed) {
  auto m = std::make_unique<CudaModel<T>>(config, options);
  m->randomize(seed);
  return m;
}
}  // namespace

std::unique_ptr<GpuBackend> create_gpu_backend(const Model& model, const GpuOptions& options) {
  require_cuda_backend();
  switch (options.dtype) {
    case GpuDtype::BF16: return make_uploaded<__nv_bfloat16>(model, options);
    case GpuDtype::FP16: return make_uploaded<__half>(model, options);
    case GpuDtype::FP32: return make_uploaded<float>(model, options);
  }
  throw EngineError(ErrorCode::InvalidArgument, "unknown GPU dtype");
}

std::unique_ptr<GpuBackend> create_random_gpu_backend(const ModelConfig& config, const GpuOptions& options, uint64_t seed) {
  require_cuda_backend();
  switch (options.dtype) {
    case GpuDtype::BF16: return make_random<__nv_bfloat16>(config, options, seed);
    case GpuDtype::FP16: return make_random<__half>(config, options, seed);
    case GpuDtype::FP32: return make_random<float>(config, options, seed);
  }
  throw EngineError(ErrorCode::InvalidArgument, "unknown GPU dtype");
}

}  // namespace streamsink
