// Device kernels of the CUDA backend. Storage type T is the weight and cache
// type (__nv_bfloat16, __half or float); the residual stream, GEMM outputs,
// norms and softmax are fp32.
//
// The sink+window attention kernel reads a session's cache where it lies:
// slots [0, S) hold the sinks, [S, S+W) a ring buffer of the last W tokens,
// keys stored before RoPE. Entry i of the context of token t (cache_policy.h)
// is rotated to its in-cache position i as it is loaded, so nothing is ever
// re-rotated in memory, gathered or copied. Tokens of the current chunk are
// read from the step's fresh QKV rows (their cache slots are written after
// attention, by kv_store), so a chunk longer than the window keeps exactly the
// per-token semantics of the CPU backend.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace streamsink {
namespace gpu {

// Per sequence of a step (device copy rebuilt every step).
struct SeqDesc {
  int64_t first_token;  // tokens in the cache before this step
  int64_t slots;        // allocated slots; a layer's K is slots * kv_heads * head_dim elements
  void* k;              // T*, layer 0, slot 0
  void* v;
  int32_t count;        // tokens of this sequence in the step
  int32_t row0;         // its first row in the step's activations
  int32_t bounded, sinks, window;
  int32_t store;        // write this step's entries to the cache
};

// Per sequence with tokens in a step: where its last row's logits are, and
// where that row is kept (the session's next-token distribution, on the
// device; null for a throwaway cache).
struct NextDesc {
  int64_t out;      // row of the step's logits
  float* keep;      // vocab + 1 floats: the raw row, then its log-sum-exp; or null
  int32_t inplace;  // the row itself becomes its log-softmax
};

// The most likely next token and its log-probability.
struct NextTop {
  int32_t token;
  float logprob;
};

// Per row (token) of a step.
struct RowDesc {
  int64_t t;    // token index in the session's stream
  int32_t seq;
  int32_t n;    // visible entries (context size incl. itself); 0 = handled elsewhere
};

struct AttnParams {
  const SeqDesc* seqs;
  const RowDesc* rows;
  const float* qkv;       // (rows, qkv_dim) fp32, biased and clipped
  float* partial;         // (rows, heads, splits, head_dim + 2)
  const float* rope_cos;  // (positions, rotary_dim / 2) or null
  const float* rope_sin;
  const void* rope_cos_t;  // the same tables in the cache type T
  const void* rope_sin_t;
  const float* alibi;     // (heads) or null
  int layer, heads, kv_heads, head_dim, rotary_dim, qkv_dim;
  int splits, chunk;      // entries per split (multiple of kTile)
  float scale;
  // Decode steps (one row per session): the last block of each (row, KV
  // head) to finish merges the splits into out and stores the row's K/V
  // head, so no attn_combine runs. counters: (rows, kv_heads), zero between
  // launches (the merging block resets its own).
  bool merge;
  // attn_decode128 launched in thread-block clusters of `splits` blocks (a
  // row and KV head's splits): they merge through distributed shared memory
  // (cluster_merge) instead of partials in global memory and a counter.
  bool cluster;
  // attn_decode128: with `prefetch` each warp loads its first batch of
  // cached entries before griddepcontrol.wait (they do not depend on the
  // qkv GEMV). With `trigger` (both decode kernels) the dependent kernel may
  // launch from the start.
  bool prefetch, trigger;
  int* counters;
  void* out;  // (rows, heads, head_dim) in the cache type
};

constexpr int kTile = 32;     // entries per tile (one per lane when scoring)
constexpr int kThreads = 128;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Programmatic dependent launch (sm_90): a kernel launched with the
// programmatic-serialization attribute may start while its predecessor runs;
// pdl_wait() blocks until the predecessor has finished and its writes are
// visible (a no-op without the attribute). pdl_trigger() lets the dependent
// start now instead of at this grid's end.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// The small kernels between two GEMVs (norms, split combine, activation)
// let their dependent launch either at their start (early) or once their own
// predecessor has finished (late): late, the next GEMV's first weight loads
// overlap this kernel's latency rather than the busy kernel before it.
__device__ __forceinline__ void pdl_trigger_early(bool late) {
  if (!late) pdl_trigger();
}
__device__ __forceinline__ void pdl_wait_then_trigger(bool late) {
  pdl_wait();
  if (late) pdl_trigger();
}

// SwiGLU of one unit: silu(gate) * up.
__device__ __forceinline__ float silu_gate(float g, float u) { return g / (1.f + expf(-g)) * u; }

// Token index of entry i of token t's context, and the slot a token lives in.
__device__ __forceinline__ int64_t entry_token(const SeqDesc& s, int64_t t, int64_t i) {
  if (!s.bounded || t < s.sinks + s.window || i < s.sinks) return i;
  return t - s.window + 1 + (i - s.sinks);
}
__device__ __forceinline__ int64_t slot_of(const SeqDesc& s, int64_t u) {
  if (!s.bounded || u < s.sinks) return u;
  return s.sinks + (u - s.sinks) % s.window;
}

// Shared memory layout of attn_split (floats): q[G][hd], k[kTile][hd+1],
// v[kTile][hd], p[G][kTile], m[G], l[G], alpha[G], acc[G][hd].
inline size_t attn_smem_bytes(int group, int head_dim) {
  size_t f = size_t(group) * head_dim + size_t(kTile) * (head_dim + 1) + size_t(kTile) * head_dim + size_t(group) * kTile +
             3 * size_t(group) + size_t(group) * head_dim;
  return f * sizeof(float);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) attn_split(AttnParams p) {
  const int split = blockIdx.x, kvh = blockIdx.y, r = blockIdx.z;
  const RowDesc row = p.rows[r];
  const int64_t n = row.n;
  const int64_t begin = int64_t(split) * p.chunk;
  if (n == 0 || begin >= n) return;
  const int64_t end = min(n, begin + p.chunk);
  const SeqDesc s = p.seqs[row.seq];
  const int hd = p.head_dim, G = p.heads / p.kv_heads, half = p.rotary_dim / 2;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = kThreads / 32;

  extern __shared__ float smem[];
  __shared__ int64_t src_of[kTile];
  float* q = smem;
  float* ks = q + G * hd;
  const int kstride = hd + 1;
  float* vs = ks + kTile * kstride;
  float* ps = vs + kTile * hd;
  float* ms = ps + G * kTile;
  float* ls = ms + G;
  float* alpha = ls + G;
  float* acc = alpha + G;

  // Query heads of this KV group, rotated to the query's in-cache position
  // n - 1 and pre-scaled.
  const int64_t q_pos = n - 1;
  const float* qrow = p.qkv + int64_t(r) * p.qkv_dim + int64_t(kvh) * G * hd;
  for (int e = tid; e < G * hd; e += kThreads) {
    const int d = e % hd;
    float x = qrow[e];
    if (p.rope_cos && d < p.rotary_dim) {
      const int i = d < half ? d : d - half;
      const float c = p.rope_cos[q_pos * half + i], sn = p.rope_sin[q_pos * half + i];
      const float other = qrow[e + (d < half ? half : -half)];
      x = d < half ? x * c - other * sn : x * c + other * sn;
    }
    q[e] = x * p.scale;
  }
  for (int g = tid; g < G; g += kThreads) {
    ms[g] = -INFINITY;
    ls[g] = 0.f;
  }
  for (int e = tid; e < G * hd; e += kThreads) acc[e] = 0.f;

  const int64_t layer_off = int64_t(p.layer) * s.slots * p.kv_heads * hd + int64_t(kvh) * hd;
  const T* kc = static_cast<const T*>(s.k) + layer_off;
  const T* vc = static_cast<const T*>(s.v) + layer_off;
  const int64_t slot_stride = int64_t(p.kv_heads) * hd;
  const int k_off = p.heads * hd + kvh * hd, v_off = (p.heads + p.kv_heads) * hd + kvh * hd;

  for (int64_t base = begin; base < end; base += kTile) {
    __syncthreads();  // previous tile consumed; q/acc initialised
    const int tile = int(end - base < kTile ? end - base : kTile);
    // Where each entry of the tile lives: >= 0 a cache slot, < 0 -(row + 1)
    // of a token of this step (its fresh QKV row).
    if (tid < tile) {
      const int64_t u = entry_token(s, row.t, base + tid);
      src_of[tid] = u >= s.first_token ? -(int64_t(s.row0) + (u - s.first_token) + 1) : slot_of(s, u);
    }
    __syncthreads();
    for (int e = tid; e < tile * hd; e += kThreads) {
      const int j = e / hd, d = e % hd;
      const int64_t i = base + j;
      const int64_t where = src_of[j];
      float kx, ko = 0.f, vx;
      const bool rot = p.rope_cos && d < p.rotary_dim;
      const int dp = d < half ? d + half : d - half;
      if (where < 0) {
        const float* src = p.qkv + (-where - 1) * p.qkv_dim;
        kx = src[k_off + d];
        if (rot) ko = src[k_off + dp];
        vx = src[v_off + d];
      } else {
        const int64_t so = where * slot_stride;
        kx = to_f(kc[so + d]);
        if (rot) ko = to_f(kc[so + dp]);
        vx = to_f(vc[so + d]);
      }
      if (rot) {
        const int ii = d < half ? d : d - half;
        const float c = p.rope_cos[i * half + ii], sn = p.rope_sin[i * half + ii];
        kx = d < half ? kx * c - ko * sn : kx * c + ko * sn;
      }
      ks[j * kstride + d] = kx;
      vs[j * hd + d] = vx;
    }
    __syncthreads();
    // Scores and the online softmax: one warp per query head, one lane per entry.
    for (int g = warp; g < G; g += nwarps) {
      float sc = -INFINITY;
      if (lane < tile) {
        const float* qg = q + g * hd;
        const float* kj = ks + lane * kstride;
        float a = 0.f;
        for (int d = 0; d < hd; ++d) a = fmaf(qg[d], kj[d], a);
        if (p.alibi) a -= float(q_pos - (base + lane)) * p.alibi[kvh * G + g];
        sc = a;
      }
      float mx = sc;
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_old = ms[g];
      const float m_new = fmaxf(m_old, mx);
      const float pj = lane < tile ? __expf(sc - m_new) : 0.f;
      float sum = pj;
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      ps[g * kTile + lane] = pj;
      if (lane == 0) {
        const float a = __expf(m_old - m_new);
        alpha[g] = a;
        ls[g] = ls[g] * a + sum;
        ms[g] = m_new;
      }
    }
    __syncthreads();
    for (int e = tid; e < G * hd; e += kThreads) {
      const int g = e / hd, d = e % hd;
      float a = acc[e] * alpha[g];
      const float* pg = ps + g * kTile;
      for (int j = 0; j < tile; ++j) a = fmaf(pg[j], vs[j * hd + d], a);
      acc[e] = a;
    }
  }
  __syncthreads();
  // Partial result of this split: (m, l, acc[hd]) per query head.
  for (int e = tid; e < G * (hd + 2); e += kThreads) {
    const int g = e / (hd + 2), d = e % (hd + 2);
    const int h = kvh * G + g;
    float* dst = p.partial + ((int64_t(r) * p.heads + h) * p.splits + split) * (hd + 2);
    dst[d] = d == 0 ? ms[g] : d == 1 ? ls[g] : acc[g * hd + d - 2];
  }
}

// Stores one KV head of a row's fresh K (pre-RoPE) and V into its cache slot;
// within a chunk longer than the window only the last writer of a ring slot.
template <typename T>
__device__ void store_kv_head(const SeqDesc* seqs, const RowDesc& row, const float* qkv_row, int layer, int heads,
                              int kv_heads, int head_dim, int kvh) {
  const SeqDesc& s = seqs[row.seq];
  if (!s.store) return;
  const int64_t end = s.first_token + s.count;
  if (s.bounded && row.t >= s.sinks && row.t + s.window < end) return;
  const int64_t slot = slot_of(s, row.t);
  const int64_t off = (int64_t(layer) * s.slots + slot) * kv_heads * head_dim + int64_t(kvh) * head_dim;
  const float* k = qkv_row + int64_t(heads + kvh) * head_dim;
  const float* v = qkv_row + int64_t(heads + kv_heads + kvh) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    static_cast<T*>(s.k)[off + d] = from_f<T>(k[d]);
    static_cast<T*>(s.v)[off + d] = from_f<T>(v[d]);
  }
}

// Sum over the block (every thread gets it); red holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = 0.f;
  for (int w = 0; w < int(blockDim.x >> 5); ++w) t += red[w];
  return t;
}

// Merges the splits of each (row, head): out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s.
// The splits' (m, l) are read by one lane each and their weights shared
// through shared memory, so no thread walks the splits serially for them.
constexpr int kMaxSplits = 1024;
template <typename T>
__global__ void attn_combine(const SeqDesc* seqs, const RowDesc* rows, const float* qkv, int layer, int kv_heads,
                             int qkv_dim, const float* partial, int heads, int head_dim, int splits, int chunk, T* out, bool late) {
  pdl_trigger_early(late);
  pdl_wait_then_trigger(late);
  const int h = blockIdx.x, r = blockIdx.y;
  // The first kv_heads blocks of a row also store its K/V (kv_store's job).
  if (h < kv_heads) store_kv_head<T>(seqs, rows[r], qkv + int64_t(r) * qkv_dim, layer, heads, kv_heads, head_dim, h);
  const int n = rows[r].n;
  if (n == 0) return;
  const int used = (n + chunk - 1) / chunk;
  const float* base = partial + (int64_t(r) * heads + h) * splits * (head_dim + 2);
  __shared__ float wgt[kMaxSplits];
  __shared__ float red[32];
  float M = -INFINITY;
  for (int sp = threadIdx.x; sp < used; sp += blockDim.x) M = fmaxf(M, base[sp * (head_dim + 2)]);
  for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = M;
  __syncthreads();
  M = red[0];
  for (int w = 1; w < int(blockDim.x >> 5); ++w) M = fmaxf(M, red[w]);
  float L = 0.f;
  for (int sp = threadIdx.x; sp < used; sp += blockDim.x) {
    const float e = __expf(base[sp * (head_dim + 2)] - M);
    wgt[sp] = e;
    L += e * base[sp * (head_dim + 2) + 1];
  }
  L = block_sum(L, red);  // its barriers also publish wgt
  const float inv = 1.f / L;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float a = 0.f;
    int sp = 0;
    for (; sp + 4 <= used; sp += 4) {
      const float a0 = base[(sp + 0) * (head_dim + 2) + 2 + d], a1 = base[(sp + 1) * (head_dim + 2) + 2 + d];
      const float a2 = base[(sp + 2) * (head_dim + 2) + 2 + d], a3 = base[(sp + 3) * (head_dim + 2) + 2 + d];
      a += wgt[sp] * a0 + wgt[sp + 1] * a1 + wgt[sp + 2] * a2 + wgt[sp + 3] * a3;
    }
    for (; sp < used; ++sp) a += wgt[sp] * base[sp * (head_dim + 2) + 2 + d];
    out[int64_t(r) * heads * head_dim + int64_t(h) * head_dim + d] = from_f<T>(a * inv);
  }
}

// Writes the step's K (pre-RoPE) and V into cache slots. Within a chunk longer
// than the window only the last writer of each ring slot stores.
template <typename T>
__global__ void kv_store(const SeqDesc* seqs, const RowDesc* rows, const float* qkv, int layer, int heads, int kv_heads,
                         int head_dim, int qkv_dim) {
  const int r = blockIdx.x;
  const RowDesc row = rows[r];
  const SeqDesc s = seqs[row.seq];
  if (!s.store) return;
  const int64_t end = s.first_token + s.count;
  if (s.bounded && row.t >= s.sinks && row.t + s.window < end) return;
  const int64_t slot = slot_of(s, row.t);
  const int64_t off = int64_t(layer) * s.slots * kv_heads * head_dim + slot * kv_heads * head_dim;
  const float* src = qkv + int64_t(r) * qkv_dim + int64_t(heads) * head_dim;
  T* kd = static_cast<T*>(s.k) + off;
  T* vd = static_cast<T*>(s.v) + off;
  const int n = kv_heads * head_dim;
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    kd[e] = from_f<T>(src[e]);
    vd[e] = from_f<T>(src[n + e]);
  }
}


// Row kernels hold their row in registers: element threadIdx.x + k * blockDim.x
// in v[k], so every load of a row is issued before any is used (a row is a few
// KB: latency, not bandwidth, is what these kernels cost). norm_threads()
// picks the block size; dim <= kNormPerThread * blockDim.x.
constexpr int kNormPerThread = 16;
inline int norm_threads(int dim) {
  int t = (dim + 3) / 4;  // about four elements per thread
  t = (t + 31) / 32 * 32;
  if (t < 128) t = 128;
  while (t < 1024 && t * kNormPerThread < dim) t += 32;
  return t > 1024 ? 1024 : t;
}

// yr = w * (v - mean) / sqrt(var + eps) (+ b); mean is 0 for RMSNorm.
// Loads this thread's elements of a norm's weight (or bias; zeros if null).
__device__ __forceinline__ void load_row_regs(const float* w, int dim, float (&r)[kNormPerThread]) {
#pragma unroll
  for (int k = 0; k < kNormPerThread; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    r[k] = w && i < dim ? __ldg(w + i) : 0.f;
  }
}

template <typename T>
__device__ __forceinline__ void normalize_regs(const float (&v)[kNormPerThread], int dim, bool rms,
                                               const float (&w)[kNormPerThread], const float (&b)[kNormPerThread],
                                               float eps, float* red, T* yr) {
  float mean = 0.f;
  if (!rms) {
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < kNormPerThread; ++k) s += v[k];  // out-of-row elements are 0
    mean = block_sum(s, red) / float(dim);
  }
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < kNormPerThread; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    const float d = i < dim ? v[k] - mean : 0.f;
    ss += d * d;
  }
  const float inv = rsqrtf(block_sum(ss, red) / float(dim) + eps);
#pragma unroll
  for (int k = 0; k < kNormPerThread; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    if (i >= dim) break;
    yr[i] = from_f<T>(fmaf((v[k] - mean) * inv, w[k], b[k]));
  }
}

// y[r] = norm(x[r]) (RMSNorm when rms, else LayerNorm), one block per row.
template <typename T>
__global__ void __launch_bounds__(1024) norm_rows(const float* x, const int64_t* row_index, int dim, const float* w,
                                                  const float* b, float eps, bool rms, T* y, bool late) {
  pdl_trigger_early(late);
  __shared__ float red[32];
  float wr[kNormPerThread], br[kNormPerThread];
  load_row_regs(w, dim, wr);
  load_row_regs(b, dim, br);
  pdl_wait_then_trigger(late);  // the norm weights above load before it
  const int64_t src = row_index ? row_index[blockIdx.x] : blockIdx.x;
  const float* xr = x + src * dim;
  float v[kNormPerThread];
#pragma unroll
  for (int k = 0; k < kNormPerThread; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    v[k] = i < dim ? xr[i] : 0.f;
  }
  normalize_regs(v, dim, rms, wr, br, eps, red, y + int64_t(blockIdx.x) * dim);
}

// x += a (+ba) (+m (+bm)), then y = norm(x): the residual of one sub-layer and
// the input norm of the next in one pass (one block per row).
template <typename T>
__global__ void __launch_bounds__(1024) residual_norm(float* x, int dim, const float* a, const float* ba, const float* m,
                                                      const float* bm, const float* w, const float* b, float eps, bool rms,
                                                      T* y, bool late) {
  pdl_trigger_early(late);
  __shared__ float red[32];
  float wr[kNormPerThread], br[kNormPerThread];
  load_row_regs(w, dim, wr);
  load_row_regs(b, dim, br);
  pdl_wait_then_trigger(late);  // the norm weights above load before it
  float* xr = x + int64_t(blockIdx.x) * dim;
  const float* ar = a + int64_t(blockIdx.x) * dim;
  const float* mr = m ? m + int64_t(blockIdx.x) * dim : nullptr;
  float v[kNormPerThread];
#pragma unroll
  for (int k = 0; k < kNormPerThread; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    v[k] = 0.f;
    if (i < dim) {
      v[k] = xr[i] + ar[i];
      if (ba) v[k] += ba[i];
      if (mr) {
        v[k] += mr[i];
        if (bm) v[k] += bm[i];
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kNormPerThread; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    if (i < dim) xr[i] = v[k];
  }
  normalize_regs(v, dim, rms, wr, br, eps, red, y + int64_t(blockIdx.x) * dim);
}

template <typename T>
__global__ void embed_rows(const int32_t* tokens, const T* table, int dim, float* x) {
  const int64_t tok = tokens[blockIdx.x];
  for (int i = threadIdx.x; i < dim; i += blockDim.x) x[int64_t(blockIdx.x) * dim + i] = to_f(table[tok * dim + i]);
}

// y[r][i] += b[i], then clamp to [-clip, clip] when clip > 0.
__global__ void bias_clip(float* y, int64_t total, int dim, const float* b, float clip, bool late) {
  pdl_trigger_early(late);
  pdl_wait_then_trigger(late);
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    float v = y[e];
    if (b) v += b[e % dim];
    if (clip > 0.f) v = fminf(clip, fmaxf(-clip, v));
    y[e] = v;
  }
}

// x += a (+ba) (+ m (+bm)); any of m, ba, bm may be null.
__global__ void residual_add(float* x, int64_t total, int dim, const float* a, const float* ba, const float* m,
                             const float* bm, bool late) {
  pdl_trigger_early(late);
  pdl_wait_then_trigger(late);
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int i = int(e % dim);
    float v = x[e] + a[e];
    if (ba) v += ba[i];
    if (m) {
      v += m[e];
      if (bm) v += bm[i];
    }
    x[e] = v;
  }
}

// Eight consecutive elements of a row as floats (16-byte loads when aligned).
__device__ __forceinline__ void load8(const float* src, float (&v)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(src), b = *reinterpret_cast<const float4*>(src + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
template <typename T>
__device__ __forceinline__ void load8(const T* src, float (&v)[8]) {
  const uint4 w = *reinterpret_cast<const uint4*>(src);
  const T* e = reinterpret_cast<const T*>(&w);
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = to_f(e[k]);
}

// SwiGLU over rows of [gate | up] (+ bias) into T; GELU (erf) in place of up.
// U is the GEMM's output type: fp32, or T where cuBLAS rounds it (batches
// past gemm_rows). Block (x, row): each thread takes 8 consecutive units.
template <typename U, typename T>
__global__ void swiglu_rows(const U* gu, const float* b, int inter, T* out, bool late) {
  pdl_trigger_early(late);
  pdl_wait_then_trigger(late);
  const int i0 = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
  if (i0 >= inter) return;
  const U* g = gu + int64_t(blockIdx.y) * 2 * inter;
  T* o = out + int64_t(blockIdx.y) * inter;
  if (inter % 8 == 0) {
    float gv[8], uv[8];
    load8(g + i0, gv);
    load8(g + inter + i0, uv);
    alignas(16) T ov[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      if (b) {
        gv[k] += b[i0 + k];
        uv[k] += b[inter + i0 + k];
      }
      ov[k] = from_f<T>(silu_gate(gv[k], uv[k]));
    }
    if constexpr (sizeof(T) == 2) {
      *reinterpret_cast<uint4*>(o + i0) = *reinterpret_cast<const uint4*>(ov);
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) o[i0 + k] = ov[k];
    }
    return;
  }
  for (int i = i0; i < min(inter, i0 + 8); ++i) {
    float gi = to_f(g[i]), ui = to_f(g[inter + i]);
    if (b) {
      gi += b[i];
      ui += b[inter + i];
    }
    o[i] = from_f<T>(silu_gate(gi, ui));
  }
}

template <typename T>
__global__ void gelu_rows(const float* x, const float* b, int64_t rows, int inter, T* out, bool late) {
  pdl_trigger_early(late);
  pdl_wait_then_trigger(late);
  const int64_t total = rows * inter;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    float v = x[e];
    if (b) v += b[e % inter];
    out[e] = from_f<T>(0.5f * v * (1.f + erff(v * 0.70710678118654752f)));
  }
}

template <typename T>
__global__ void convert_to(const float* src, int64_t n, T* dst) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x)
    dst[e] = from_f<T>(src[e]);
}

template <typename T>
__global__ void convert_from(const T* src, int64_t n, float* dst) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x)
    dst[e] = to_f(src[e]);
}

// ---- Decode fast paths ------------------------------------------------------

// 16 bytes of T as floats (8 bf16/fp16 or 4 fp32).
template <typename T> struct Vec16;
template <> struct Vec16<float> {
  static constexpr int N = 4;
  __device__ static void load(const uint4& u, float* f) {
    f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y); f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
  }
};
template <> struct Vec16<__nv_bfloat16> {
  static constexpr int N = 8;
  __device__ static void load(const uint4& u, float* f) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
    for (int i = 0; i < 4; ++i) { float2 v = __bfloat1622float2(h[i]); f[2 * i] = v.x; f[2 * i + 1] = v.y; }
  }
};
template <> struct Vec16<__half> {
  static constexpr int N = 8;
  __device__ static void load(const uint4& u, float* f) {
    const __half2* h = reinterpret_cast<const __half2*>(&u);
    for (int i = 0; i < 4; ++i) { float2 v = __half22float2(h[i]); f[2 * i] = v.x; f[2 * i + 1] = v.y; }
  }
};

// What a decode GEMV reads and where its result goes (gemv_rows).
template <typename T>
struct GemvArgs {
  const T* W;  // (out, in) row-major
  const void* X;  // (R, in): T, or the fp32 residual stream when the norm is fused
  int in, out;
  float* Y;  // (R, out) fp32, unless act or resid takes the result
  const float* glu_bias;  // GLU: [gate | up] bias or null
  T* act;  // GLU: (R, out / 2)
  float* resid;  // not null: resid (R, out) += result (+ resid_bias) instead of Y
  const float* resid_bias;
  float rms_eps;  // fused RMSNorm: result *= rsqrt(mean(x^2) + eps) of its X row
};

// X row r's N values at vector index v (16 bytes of T; 2N bytes of fp32).
template <typename T, bool F32X>
__device__ __forceinline__ void load_x(const void* X, int in, int r, int v, float (&xf)[Vec16<T>::N]) {
  constexpr int N = Vec16<T>::N;
  if constexpr (F32X) {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(X) + int64_t(r) * in) + v * (N / 4);
#pragma unroll
    for (int k = 0; k < N / 4; ++k) {
      const float4 f = __ldg(p + k);
      xf[4 * k] = f.x; xf[4 * k + 1] = f.y; xf[4 * k + 2] = f.z; xf[4 * k + 3] = f.w;
    }
  } else {
    Vec16<T>::load(__ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(X) + int64_t(r) * in) + v), xf);
  }
}

// Y (R, out) = X (R, in) W^T for a few rows R: a weight-streaming GEMV, one
// warp per output, 16-byte loads of W that bypass L1 (each weight is read
// once per step), X re-read from L1/L2. in % (16 / sizeof(T)) == 0.
//
// GLU: W is [gate (out/2 rows) | up (out/2 rows)]; half of the block's warps
// take gate rows and half the up rows of the same units, and the block writes
// act (R, out/2) = silu(gate + b) * (up + b') in T instead of Y (b = [b | b'],
// or null): no activation kernel and no fp32 round trip of [gate | up].
//
// RMS (the input RMSNorm fused): X is the fp32 residual stream and W has the
// norm's weight folded into its columns (W diag(w)), so norm(x) W^T =
// rsqrt(mean(x^2) + eps) * (x (W diag(w))^T). Every warp reads its whole part
// of the X row anyway; the sum of squares rides along with the dot product.
// With resid set, the result is added to the residual stream in place (each
// element read and written by one lane) instead of stored in Y.
template <typename T, int R, int KS, bool GLU, bool RMS>
__global__ void __launch_bounds__(256) gemv_rows(GemvArgs<T> p) {
  // KS warps share one output (each a contiguous part of the row), so a
  // matrix with few rows still puts enough loads in flight on every SM.
  constexpr int N = Vec16<T>::N, WARPS = 8, OUTS = WARPS / KS, UNITS = GLU ? OUTS / 2 : OUTS;
  static_assert(!GLU || OUTS >= 2, "gemv_rows: GLU needs two outputs per block");
  pdl_trigger();  // the attention kernel after the qkv GEMV prefetches its cache
  const int in = p.in, out = p.out;
  const int wb = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int slot = wb / KS, part = wb % KS, inter = out / 2;
  const int unit = blockIdx.x * UNITS + slot % UNITS;
  const int o = GLU ? unit + (slot >= UNITS ? inter : 0) : unit;
  const bool live = GLU ? unit < inter : o < out;
  const int nv = in / N;
  const int v_begin = int(int64_t(nv) * part / KS), v_end = int(int64_t(nv) * (part + 1) / KS);
  const uint4* w = reinterpret_cast<const uint4*>(p.W + int64_t(live ? o : 0) * in);
  float acc[R], ss[R];
  for (int r = 0; r < R; ++r) acc[r] = ss[r] = 0.f;
  // Batches of eight 16-byte weight loads per lane, all issued before any is
  // used (the last batch of a row predicated). The first batch goes out
  // before waiting for the kernel that produces X: launched as a programmatic
  // dependent, this kernel streams weights while its predecessor finishes.
  int v = v_begin + lane;
  uint4 wv[8];
  auto load_batch = [&](int at) {
#pragma unroll
    for (int u = 0; u < 8; ++u)
      if (at + 32 * u < v_end) wv[u] = __ldcs(w + at + 32 * u);
  };
  if (live) load_batch(v);
  pdl_wait();
  if (live) {
    for (bool loaded = true; v < v_end; v += 256, loaded = false) {
      if (!loaded) load_batch(v);
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        if (v + 32 * u >= v_end) break;
        float wf[N];
        Vec16<T>::load(wv[u], wf);
        for (int r = 0; r < R; ++r) {
          float xf[N];
          load_x<T, RMS>(p.X, in, r, v + 32 * u, xf);
          for (int i = 0; i < N; ++i) {
            acc[r] = fmaf(wf[i], xf[i], acc[r]);
            if constexpr (RMS) ss[r] = fmaf(xf[i], xf[i], ss[r]);
          }
        }
      }
    }
  }
  __shared__ float part_sum[WARPS][R], part_ss[WARPS][R];
  for (int r = 0; r < R; ++r) {
    float a = acc[r], q = ss[r];
    for (int off = 16; off > 0; off >>= 1) {
      a += __shfl_xor_sync(0xffffffffu, a, off);
      if constexpr (RMS) q += __shfl_xor_sync(0xffffffffu, q, off);
    }
    if (lane == 0) {
      part_sum[wb][r] = a;
      if constexpr (RMS) part_ss[wb][r] = q;
    }
  }
  if (GLU || KS > 1) __syncthreads();
  else __syncwarp();
  // This warp's row scale (1 without the fused norm): the KS parts together
  // cover the whole X row.
  auto row_scale = [&](int first_warp) {
    if constexpr (!RMS) return 1.f;
    float q = 0.f;
    for (int k = 0; k < KS; ++k) q += part_ss[first_warp + k][lane];
    return rsqrtf(q / float(in) + p.rms_eps);
  };
  if constexpr (GLU) {
    if (live && slot < UNITS && part == 0 && lane < R) {
      float g = 0.f, u = 0.f;
      for (int k = 0; k < KS; ++k) {
        g += part_sum[wb + k][lane];
        u += part_sum[wb + UNITS * KS + k][lane];
      }
      const float scale = row_scale(wb);
      g = g * scale + (p.glu_bias ? p.glu_bias[unit] : 0.f);
      u = u * scale + (p.glu_bias ? p.glu_bias[inter + unit] : 0.f);
      p.act[int64_t(lane) * inter + unit] = from_f<T>(silu_gate(g, u));
    }
  } else {
    if (live && part == 0 && lane < R) {
      float a = 0.f;
      for (int k = 0; k < KS; ++k) a += part_sum[wb + k][lane];
      a *= row_scale(wb);
      if (p.resid) p.resid[int64_t(lane) * out + o] += a + (p.resid_bias ? p.resid_bias[o] : 0.f);
      else p.Y[int64_t(lane) * out + o] = a;
    }
  }
}

// Decode attention for head_dim 128 with full rotary (or ALiBi) and up to 8
// query heads per KV head. Each warp walks batches of B consecutive entries,
// a lane owning 4 dims of every entry (8-byte loads of bf16/fp16 K and V, the
// whole warp one 256-byte row). The next batch's loads are issued before the
// current batch is used, so two batches per warp are in flight.
//  - RoPE: for G <= 2 the query is rotated back to each key's position
//    instead of the key forward (same dot product, no shuffles); for larger
//    groups the key is rotated once and shared by the G queries. The angle
//    advances by one position per entry (complex multiplication), re-read
//    from the table at every batch start.
//  - Scores: the B partial dot products are reduce-scattered across the warp
//    (B - 1 + log2(32 / B) shuffles instead of 5 per entry), the softmax is
//    updated once per batch, and probabilities are broadcast for P.V.
// Same contract and partial output as attn_split. The rotate-half partner of
// lane l's dims sits in lane l ^ 16.
template <typename T> struct Vec4;
template <> struct Vec4<float> {
  using type = float4;
  __device__ static void load(const float4& u, float* f) { f[0] = u.x; f[1] = u.y; f[2] = u.z; f[3] = u.w; }
};
template <> struct Vec4<__nv_bfloat16> {
  using type = uint2;
  __device__ static void load(const uint2& u, float* f) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
    float2 a = __bfloat1622float2(h[0]), b = __bfloat1622float2(h[1]);
    f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
  }
};
template <> struct Vec4<__half> {
  using type = uint2;
  __device__ static void load(const uint2& u, float* f) {
    const __half2* h = reinterpret_cast<const __half2*>(&u);
    float2 a = __half22float2(h[0]), b = __half22float2(h[1]);
    f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
  }
};

// Sums B per-lane values over the warp and leaves entry decode_entry<B>(lane)'s
// total in every lane (v[0]); lanes are split on bits 4, 3, ... first.
template <int B>
__device__ __forceinline__ float reduce_scatter(float (&v)[B], int lane) {
#pragma unroll
  for (int o = 16, half = B / 2; o >= 32 / B; o >>= 1, half >>= 1) {
    const bool hi = lane & o;
#pragma unroll
    for (int k = 0; k < half; ++k) {
      const float mine = hi ? v[k + half] : v[k], other = hi ? v[k] : v[k + half];
      v[k] = mine + __shfl_xor_sync(0xffffffffu, other, o);
    }
  }
#pragma unroll
  for (int o = 16 / B; o > 0; o >>= 1) v[0] += __shfl_xor_sync(0xffffffffu, v[0], o);
  return v[0];
}
template <int B>
__device__ __forceinline__ int decode_entry(int lane) {
  int e = 0;
#pragma unroll
  for (int o = 16; o >= 32 / B; o >>= 1) e = 2 * e + ((lane & o) ? 1 : 0);
  return e;
}
template <int B>
__device__ __forceinline__ int decode_holder(int j) {
  int lane = 0;
#pragma unroll
  for (int o = 16, bit = B / 2; o >= 32 / B; o >>= 1, bit >>= 1) lane |= (j & bit) ? o : 0;
  return lane;
}

// Where entry i of a row's context lies, for the head_dim-128 decode
// kernels: a sink slot or a ring slot (counted from the oldest window entry
// once the window is full), or, from i_fresh on, a token of this step, read
// from its fresh fp32 QKV row (token index rises with the entry index; the
// step's slots are written after attention).
struct ContextMap {
  SeqDesc s;
  int64_t t;
  bool saturated;
  int ring0, i_fresh;
  __device__ ContextMap(const SeqDesc& seq, const RowDesc& row, int end) : s(seq), t(row.t) {
    saturated = s.bounded && t >= s.sinks + s.window;
    ring0 = saturated ? int((t - s.window + 1 - s.sinks) % s.window) : 0;
    int64_t fresh = s.first_token;
    if (saturated && s.first_token >= s.sinks) fresh = max(int64_t(s.sinks), s.sinks + s.first_token - (t - s.window + 1));
    i_fresh = int(min(fresh, int64_t(end)));
  }
  __device__ int slot(int i) const {
    if (!saturated || i < s.sinks) return i;
    int idx = ring0 + (i - s.sinks);
    if (idx >= s.window) idx -= s.window;
    return s.sinks + idx;
  }
  __device__ const float* fresh_row(const AttnParams& p, int i) const {
    return p.qkv + (int64_t(s.row0) + (entry_token(s, t, i) - s.first_token)) * p.qkv_dim;
  }
};

// End of a head_dim-128 decode block: merges its warps' online-softmax
// states (max m, sum l, unnormalised acc per head, in shared memory; a warp
// that saw no entry has m = -inf) into the split's partial (m, l, acc).
// Element d of head g's merged state: 0 the max M, 1 the sum l, 2 + i acc[i].
template <int G, int NW, int HD>
__device__ __forceinline__ float merged_warps(const float (&sm)[NW][G], const float (&sl)[NW][G],
                                              const float (&sacc)[NW][G][HD], int g, int d) {
  float M = -INFINITY;
  for (int w = 0; w < NW; ++w) M = fmaxf(M, sm[w][g]);
  if (d == 0) return M;
  float val = 0.f;
  for (int w = 0; w < NW; ++w) {
    const float f = sm[w][g] == -INFINITY ? 0.f : __expf(sm[w][g] - M);
    val += f * (d == 1 ? sl[w][g] : sacc[w][g][d - 2]);
  }
  return val;
}

template <int G, int NW = kThreads / 32, int HD = 128>
__device__ __forceinline__ void write_split_partial(const AttnParams& p, int r, int kvh, int split, const float (&sm)[NW][G],
                                                    const float (&sl)[NW][G], const float (&sacc)[NW][G][HD]) {
  for (int e = threadIdx.x; e < G * (HD + 2); e += kThreads) {
    const int g = e / (HD + 2), d = e % (HD + 2);
    p.partial[((int64_t(r) * p.heads + kvh * G + g) * p.splits + split) * (HD + 2) + d] =
        merged_warps<G, NW, HD>(sm, sl, sacc, g, d);
  }
}

constexpr int kClusterSplits = 16;  // most blocks per cluster (non-portable above 8)

// p.cluster: this block's split partial `part` (shared memory, per query
// head: max, sum, unnormalised acc, HD + 2 floats; max -inf for a split with
// no entries) is merged with the other splits of its (row, KV head), all
// blocks of one cluster. Each block reads every split's max and sum, then
// writes its share of the outputs, reading the splits' acc from their
// shared memory; split 0 stores the row's K/V head. `scratch` (G x 17
// floats of this block's shared memory, not overlapping part) holds the
// weights. The second barrier keeps every block's shared memory alive until
// the others have read it, so every block of the cluster must arrive here.
template <typename T, int G, int HD = 128>
__device__ __forceinline__ void cluster_merge(const AttnParams& p, const RowDesc& row, int r, int kvh, int split,
                                              const float* part, float* scratch) {
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  const int S = int(cluster.num_blocks());
  float* wgt = scratch;  // [G][kClusterSplits]
  float* inv_l = scratch + G * kClusterSplits;
  cluster.sync();
  // A half warp per query head: lane k reads split k's max and sum.
  constexpr int kLanes = G * kClusterSplits < 32 ? 32 : G * kClusterSplits;
  if (threadIdx.x < kLanes) {
    const int g = threadIdx.x / kClusterSplits, k = threadIdx.x % kClusterSplits;
    float m = -INFINITY, l = 0.f;
    if (g < G && k < S) {
      const float* q = cluster.map_shared_rank(part + g * (HD + 2), k);
      m = q[0];
      l = q[1];
    }
    float M = m;
    for (int o = kClusterSplits / 2; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    const float w = m == -INFINITY ? 0.f : __expf(m - M);
    float L = w * l;
    for (int o = kClusterSplits / 2; o > 0; o >>= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
    if (g < G) {
      wgt[g * kClusterSplits + k] = w;
      if (k == 0) inv_l[g] = L > 0.f ? 1.f / L : 0.f;
    }
  }
  __syncthreads();
  if (row.n > 0) {
    T* out = static_cast<T*>(p.out);
    const int64_t head0 = int64_t(r) * p.heads + int64_t(kvh) * G;
    for (int e = split * kThreads + threadIdx.x; e < G * HD; e += S * kThreads) {
      const int g = e / HD, d = e % HD;
      float a = 0.f;
      for (int k = 0; k < S; ++k) {
        const float w = wgt[g * kClusterSplits + k];
        if (w != 0.f) a += w * *cluster.map_shared_rank(part + g * (HD + 2) + 2 + d, k);
      }
      out[(head0 + g) * HD + d] = from_f<T>(a * inv_l[g]);
    }
  }
  if (split == 0) store_kv_head<T>(p.seqs, row, p.qkv + int64_t(r) * p.qkv_dim, p.layer, p.heads, p.kv_heads, HD, kvh);
  cluster.sync();
}

constexpr int kMergeSplits = 64;  // most splits the in-kernel merge takes

// The end of a fast decode kernel's block: its split's partial, and with
// p.merge the merge by the row and KV head's last block (see AttnParams).
// A row with one split skips the partial and writes its output directly.
// CLUSTER: the kernel may run with p.cluster (attn_decode128 only; the
// tensor-core kernel's register budget has no room for the path).
template <typename T, int G, int NW = kThreads / 32, int HD = 128, bool CLUSTER = false>
__device__ __forceinline__ void finish_split(const AttnParams& p, const RowDesc& row, int r, int kvh, int split,
                                             const float (&sm)[NW][G], const float (&sl)[NW][G],
                                             const float (&sacc)[NW][G][HD]) {
  if (CLUSTER && p.cluster) {
    // The block's partial goes where its warps' acc was (read first).
    static_assert(NW * HD >= HD + 2 + kClusterSplits + 1, "cluster_merge: sacc too small for the partial");
    constexpr int kPer = (G * (HD + 2) + kThreads - 1) / kThreads;
    float v[kPer];
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = threadIdx.x + i * kThreads;
      v[i] = e < G * (HD + 2) ? merged_warps<G, NW, HD>(sm, sl, sacc, e / (HD + 2), e % (HD + 2)) : 0.f;
    }
    __syncthreads();
    float* part = const_cast<float*>(&sacc[0][0][0]);
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = threadIdx.x + i * kThreads;
      if (e < G * (HD + 2)) part[e] = v[i];
    }
    return cluster_merge<T, G, HD>(p, row, r, kvh, split, part, part + G * (HD + 2));
  }
  const int used = (row.n + p.chunk - 1) / p.chunk;
  const int64_t head0 = int64_t(r) * p.heads + int64_t(kvh) * G;
  T* out = static_cast<T*>(p.out);
  if (p.merge && used == 1) {
    for (int e = threadIdx.x; e < G * HD; e += kThreads) {
      const int g = e / HD, d = e % HD;
      out[(head0 + g) * HD + d] =
          from_f<T>(merged_warps<G, NW, HD>(sm, sl, sacc, g, 2 + d) / merged_warps<G, NW, HD>(sm, sl, sacc, g, 1));
    }
    store_kv_head<T>(p.seqs, row, p.qkv + int64_t(r) * p.qkv_dim, p.layer, p.heads, p.kv_heads, HD, kvh);
    return;
  }
  write_split_partial<G>(p, r, kvh, split, sm, sl, sacc);
  if (!p.merge) return;
  __shared__ int last;
  __threadfence();  // this block's partial is visible before it counts itself in
  __syncthreads();
  if (threadIdx.x == 0) {
    int* c = p.counters + int64_t(r) * p.kv_heads + kvh;
    last = atomicAdd(c, 1) == used - 1;
    if (last) *c = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  store_kv_head<T>(p.seqs, row, p.qkv + int64_t(r) * p.qkv_dim, p.layer, p.heads, p.kv_heads, HD, kvh);
  // The splits' partials, read at L2 (__ldcg: never a stale L1 line). A
  // warp per query head turns the splits' maxima into weights (a split per
  // lane, up to kMergeSplits), then every output sums its splits.
  __shared__ float wgt[G][kMergeSplits], inv_l[G];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int g = warp; g < G; g += NW) {
    const float* q = p.partial + (head0 + g) * p.splits * (HD + 2);
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    if (lane < used) m0 = __ldcg(q + lane * (HD + 2)), l0 = __ldcg(q + lane * (HD + 2) + 1);
    if (lane + 32 < used) m1 = __ldcg(q + (lane + 32) * (HD + 2)), l1 = __ldcg(q + (lane + 32) * (HD + 2) + 1);
    float M = fmaxf(m0, m1);
    for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    const float w0 = lane < used ? __expf(m0 - M) : 0.f, w1 = lane + 32 < used ? __expf(m1 - M) : 0.f;
    float L = w0 * l0 + w1 * l1;
    for (int o = 16; o > 0; o >>= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
    if (lane < used) wgt[g][lane] = w0;
    if (lane + 32 < used) wgt[g][lane + 32] = w1;
    if (lane == 0) inv_l[g] = 1.f / L;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < G * HD; e += kThreads) {
    const int g = e / HD, d = e % HD;
    const float* q = p.partial + (head0 + g) * p.splits * (HD + 2) + 2 + d;
    float a = 0.f;
#pragma unroll 8
    for (int sp = 0; sp < used; ++sp) a += wgt[g][sp] * __ldcg(q + sp * (HD + 2));
    out[(head0 + g) * HD + d] = from_f<T>(a * inv_l[g]);
  }
}

// With p.merge, a row with no entries still stores its K/V (split 0's block).
template <typename T>
__device__ __forceinline__ void empty_row_store(const AttnParams& p, const RowDesc& row, int r, int kvh, int split) {
  if (p.merge && row.n == 0 && split == 0)
    store_kv_head<T>(p.seqs, row, p.qkv + int64_t(r) * p.qkv_dim, p.layer, p.heads, p.kv_heads, p.head_dim, kvh);
}

// Entries per batch (B) and the occupancy the register budget is cut for.
template <typename T, int G, int B, int MB>
struct DecodeOccupancy {
  static constexpr int kMinBlocks = MB ? MB : (sizeof(T) == 4 || G >= 8 ? 1 : (G == 1 ? (B == 8 ? 4 : 5) : G == 2 ? 3 : 2));
};
template <typename T, int G>
constexpr int decode_batch() {
  return sizeof(T) == 4 || G >= 4 ? 4 : 8;
}

template <typename T, int G, int B, int MB = 0>
__global__ void __launch_bounds__(kThreads, DecodeOccupancy<T, G, B, MB>::kMinBlocks) attn_decode128(AttnParams p) {
  constexpr int HD = 128, NW = kThreads / 32;
  constexpr bool kRotQ = G <= 2;
  using V4 = typename Vec4<T>::type;
  if (p.trigger) pdl_trigger();
  const int split = blockIdx.x, kvh = blockIdx.y, r = blockIdx.z;
  const RowDesc row = p.rows[r];
  const int n = row.n;
  const int begin = split * p.chunk;
  __shared__ float sm[NW][G], sl[NW][G], sacc[NW][G][HD];
  if (n == 0 || begin >= n) {
    if (!p.cluster) return empty_row_store<T>(p, row, r, kvh, split);
    // No entries: an empty partial (in sacc, as finish_split), and the cluster's merge.
    float* part = &sacc[0][0][0];
    for (int e = threadIdx.x; e < G * (HD + 2); e += kThreads) part[e] = e % (HD + 2) == 0 ? -INFINITY : 0.f;
    __syncthreads();
    pdl_wait();
    return cluster_merge<T, G, HD>(p, row, r, kvh, split, part, part + G * (HD + 2));
  }
  const int end = min(n, begin + p.chunk);
  const SeqDesc s = p.seqs[row.seq];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int d0 = lane * 4, fi = d0 & 63;  // this lane's dims and their frequency index
  const bool lo = lane < 16;
  const bool rope = p.rope_cos != nullptr;

  // Queries of the group at position n - 1, scaled; qp = the partner lane's
  // query with the rotation's sign folded in (kRotQ). Set after the wait.
  const int q_pos = n - 1;
  float q[G][4], qp[kRotQ ? G : 1][4];
  float m[G], l[G], acc[G][4];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[g][e] = 0.f;
  }
  // cos/sin of one position step: a batch's angles advance from its first
  // entry's by complex multiplication.
  float c1[4] = {1.f, 1.f, 1.f, 1.f}, s1[4] = {0.f, 0.f, 0.f, 0.f};
  if (rope) {
    const float4 cv = *reinterpret_cast<const float4*>(p.rope_cos + 64 + fi);
    const float4 sv = *reinterpret_cast<const float4*>(p.rope_sin + 64 + fi);
    c1[0] = cv.x; c1[1] = cv.y; c1[2] = cv.z; c1[3] = cv.w;
    s1[0] = sv.x; s1[1] = sv.y; s1[2] = sv.z; s1[3] = sv.w;
  }
  const int64_t slot_stride = int64_t(p.kv_heads) * HD;
  const int64_t layer_off = int64_t(p.layer) * s.slots * slot_stride + int64_t(kvh) * HD + d0;
  const T* kc = static_cast<const T*>(s.k) + layer_off;
  const T* vc = static_cast<const T*>(s.v) + layer_off;
  const int k_off = p.heads * HD + kvh * HD + d0, v_off = (p.heads + p.kv_heads) * HD + kvh * HD + d0;
  const ContextMap ctx(s, row, end);
  const int i_fresh = ctx.i_fresh;
  auto slot_of_entry = [&](int i) { return ctx.slot(i); };
  auto fresh_row = [&](int i) { return ctx.fresh_row(p, i); };

  struct Batch {
    V4 k[B], v[B];
    float4 c, s;
  };
  auto load = [&](int i0, Batch& b) {
#pragma unroll
    for (int j = 0; j < B; ++j) {
      const int i = i0 + j;
      if (i >= i_fresh) break;
      const int64_t off = int64_t(slot_of_entry(i)) * slot_stride;
      b.k[j] = __ldcs(reinterpret_cast<const V4*>(kc + off));
      b.v[j] = __ldcs(reinterpret_cast<const V4*>(vc + off));
    }
    if (rope) {
      b.c = __ldg(reinterpret_cast<const float4*>(p.rope_cos + int64_t(i0) * 64 + fi));
      b.s = __ldg(reinterpret_cast<const float4*>(p.rope_sin + int64_t(i0) * 64 + fi));
    }
  };
  auto unpack = [&](int i, const V4& raw, int off, float* f) {
    if (i >= i_fresh) {
      const float4 x = *reinterpret_cast<const float4*>(fresh_row(i) + off);
      f[0] = x.x; f[1] = x.y; f[2] = x.z; f[3] = x.w;
    } else {
      Vec4<T>::load(raw, f);
    }
  };
  auto consume = [&](int i0, const Batch& b) {
    float sc[G][B];
    float c[4] = {b.c.x, b.c.y, b.c.z, b.c.w}, sn[4] = {b.s.x, b.s.y, b.s.z, b.s.w};
#pragma unroll
    for (int j = 0; j < B; ++j) {
#pragma unroll
      for (int g = 0; g < G; ++g) sc[g][j] = 0.f;
      if (i0 + j >= end) continue;
      if (rope && j > 0) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float cn = c[e] * c1[e] - sn[e] * s1[e];
          sn[e] = sn[e] * c1[e] + c[e] * s1[e];
          c[e] = cn;
        }
      }
      float k[4];
      unpack(i0 + j, b.k[j], k_off, k);
      if (!rope) {
#pragma unroll
        for (int g = 0; g < G; ++g)
          sc[g][j] = q[g][0] * k[0] + q[g][1] * k[1] + q[g][2] * k[2] + q[g][3] * k[3];
      } else if constexpr (kRotQ) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
          float a = 0.f;
#pragma unroll
          for (int e = 0; e < 4; ++e) a = fmaf(fmaf(q[g][e], c[e], qp[g][e] * sn[e]), k[e], a);
          sc[g][j] = a;
        }
      } else {
        float kr[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float o = __shfl_xor_sync(0xffffffffu, k[e], 16);
          kr[e] = lo ? k[e] * c[e] - o * sn[e] : k[e] * c[e] + o * sn[e];
        }
#pragma unroll
        for (int g = 0; g < G; ++g)
          sc[g][j] = q[g][0] * kr[0] + q[g][1] * kr[1] + q[g][2] * kr[2] + q[g][3] * kr[3];
      }
    }
    // Full scores (lane holds entry je), one softmax update per batch.
    const int je = decode_entry<B>(lane);
    const int ie = i0 + je;
    float pr[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float x = reduce_scatter<B>(sc[g], lane);
      if (p.alibi) x -= float(q_pos - ie) * p.alibi[kvh * G + g];
      if (ie >= end) x = -INFINITY;
      float bm = x;
#pragma unroll
      for (int o = 16; o >= 32 / B; o >>= 1) bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, o));
      const float m_new = fmaxf(m[g], bm);
      const float alpha = __expf(m[g] - m_new);
      pr[g] = __expf(x - m_new);
      float ps = pr[g];
#pragma unroll
      for (int o = 16; o >= 32 / B; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
      l[g] = l[g] * alpha + ps;
      m[g] = m_new;
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[g][e] *= alpha;
    }
#pragma unroll
    for (int j = 0; j < B; ++j) {
      if (i0 + j >= end) break;
      float v[4];
      unpack(i0 + j, b.v[j], v_off, v);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float pj = __shfl_sync(0xffffffffu, pr[g], decode_holder<B>(j));
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[g][e] = fmaf(pj, v[e], acc[g][e]);
      }
    }
  };

  const int stride = NW * B;
  int i0 = begin + warp * B;
  // The warp's first batch of cached entries is loaded before the wait.
  Batch cur;
  if (p.prefetch && i0 < end) load(i0, cur);
  // Launched as a programmatic dependent of the qkv GEMV (its QKV rows).
  pdl_wait();
  {
    float c[4] = {1.f, 1.f, 1.f, 1.f}, sn[4] = {0.f, 0.f, 0.f, 0.f};
    if (rope) {
      const float4 cv = *reinterpret_cast<const float4*>(p.rope_cos + int64_t(q_pos) * 64 + fi);
      const float4 sv = *reinterpret_cast<const float4*>(p.rope_sin + int64_t(q_pos) * 64 + fi);
      c[0] = cv.x; c[1] = cv.y; c[2] = cv.z; c[3] = cv.w;
      sn[0] = sv.x; sn[1] = sv.y; sn[2] = sv.z; sn[3] = sv.w;
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float4 x = *reinterpret_cast<const float4*>(p.qkv + int64_t(r) * p.qkv_dim + (int64_t(kvh) * G + g) * HD + d0);
      float xv[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float o = __shfl_xor_sync(0xffffffffu, xv[e], 16);
        const float y = rope ? (lo ? xv[e] * c[e] - o * sn[e] : xv[e] * c[e] + o * sn[e]) : xv[e];
        q[g][e] = y * p.scale;
      }
      if constexpr (kRotQ) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float o = __shfl_xor_sync(0xffffffffu, q[g][e], 16);
          qp[g][e] = lo ? o : -o;
        }
      }
    }
  }
  if (!p.prefetch && i0 < end) load(i0, cur);
  // Two batches per warp in flight: the next one's loads go out before the
  // current one is consumed.
  for (; i0 < end; i0 += stride) {
    Batch nxt;
    if (i0 + stride < end) load(i0 + stride, nxt);
    consume(i0, cur);
    cur = nxt;
  }

  // Merge the warps' (m, l, acc) and write the split's partial.
  for (int g = 0; g < G; ++g) {
    if (lane == 0) {
      sm[warp][g] = m[g];
      sl[warp][g] = l[g];
    }
    for (int e = 0; e < 4; ++e) sacc[warp][g][d0 + e] = acc[g][e];
  }
  __syncthreads();
  finish_split<T, G, NW, HD, true>(p, row, r, kvh, split, sm, sl, sacc);
}

// ---- Grouped-query decode attention on tensor cores ------------------------
// attn_decode128_mma: head_dim 128, full rotary or ALiBi, 4 or 8 query heads
// per KV head, bf16/fp16 caches. Same contract and partial output as
// attn_decode128 (STREAMSINK_ATTN_MMA=0 selects that one). Every K/V entry a
// warp loads serves all G queries through mma.sync m16n8k16 (rows = queries,
// padded to 16), so the per-entry instruction count no longer grows with G
// the way the scalar kernel's does.
//
// A warp takes tiles of 16 consecutive entries. Lane = 4 * grp + qd.
//  - S = Q K^T: A = Q (16 queries x 16 dims per chunk, 8 chunks), B = K^T
//    (16 dims x 8 entries, two halves per tile). The head dims are permuted
//    consistently in A and B: a lane's 16 dims of each rotate-half are
//    lane_dim(qd, 0..15) (8qd..8qd+7 and 32+8qd..32+8qd+7, so the quad of
//    one entry reads adjacent 16-byte pieces) and their rotate-half partners
//    64 on: it loads them as 16-byte vectors and rotates its keys without
//    shuffles.
//  - The S accumulator (query grp, entries 2qd, 2qd+1 of each half) is the
//    A operand of P V as it lies; the quad of lanes with one grp holds a
//    query's 16 scores (max and sum: two shuffles each).
//  - O = P V: B = V (16 entries x 8 dims per n-tile, 16 n-tiles); column n of
//    n-tile j is dim lane_dim(n, j) over 128 (8n + j, or 64 + 8n + j - 8), so
//    a lane loads its four entries' dims of grp as 16-byte vectors and packs
//    pairs with byte permutes.
//  - Loads run a stage ahead: a tile's keys are issued as soon as the last
//    tile's Q K^T has consumed the key registers, its values once the last
//    P V has, and the first tile's cached entries before griddepcontrol.wait.
// (lo, hi) <- (lo c - hi s, hi c + lo s) on two dim pairs held as V (bf16 or
// fp16 pairs), in that arithmetic: each product or fma rounded to the type,
// as a bf16/fp16 PyTorch model's rotary embedding computes it.
template <typename V>
__device__ __forceinline__ void rotate_pairs(uint32_t& lo, uint32_t& hi, uint32_t c, uint32_t s) {
  const V a = *reinterpret_cast<const V*>(&lo), b = *reinterpret_cast<const V*>(&hi);
  const V cc = *reinterpret_cast<const V*>(&c), ss = *reinterpret_cast<const V*>(&s);
  const V nl = __hfma2(a, cc, __hneg2(__hmul2(b, ss))), nh = __hfma2(b, cc, __hmul2(a, ss));
  lo = *reinterpret_cast<const uint32_t*>(&nl);
  hi = *reinterpret_cast<const uint32_t*>(&nh);
}

template <typename T> struct MmaType;
template <> struct MmaType<__nv_bfloat16> {
  __device__ static uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  __device__ static float2 unpack(uint32_t u) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u));
  }
  __device__ static void rotate(uint32_t& lo, uint32_t& hi, uint32_t c, uint32_t s) {
    rotate_pairs<__nv_bfloat162>(lo, hi, c, s);
  }
  __device__ static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <> struct MmaType<__half> {
  __device__ static uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  __device__ static float2 unpack(uint32_t u) { return __half22float2(*reinterpret_cast<const __half2*>(&u)); }
  __device__ static void rotate(uint32_t& lo, uint32_t& hi, uint32_t c, uint32_t s) { rotate_pairs<__half2>(lo, hi, c, s); }
  __device__ static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

// Y (R, out) = X (R, in) W^T for 5..32 rows on tensor cores: a weight-
// streaming GEMV whose FMAs would otherwise be R times the weight loads.
// A block owns 16 output rows; its 8 warps split the input dimension into
// 64-column blocks, each warp issuing m16n8k16 MMAs with W as the A operand
// and X as B (NT n-tiles of 8 rows of X), and the warps' partial tiles are
// summed through shared memory. The k order inside a 64-column block is
// permuted so that every load is a 16-byte vector: lane (grp, qd) loads
// columns 8qd..8qd+7 and 32+8qd..32+8qd+7 of W rows grp and grp+8 and of X
// row grp, and feeds the same words to the A and B operands of each of the
// four MMAs (a dot product does not depend on the order of its terms).
// in % 8 == 0; columns past in and rows past out or R load as zeros.
//
// GLU: W is [gate (out/2 rows) | up (out/2 rows)] and the block's 16 rows are
// 8 gate rows and the 8 up rows of the same units; instead of Y it writes
// act (R, out/2) = silu(gate + b) * (up + b') in T (b = [b | b'], or null).
template <typename T, int NT, bool GLU = false>
__global__ void __launch_bounds__(256) gemv_mma(const T* __restrict__ W, const T* __restrict__ X, int in, int out, int R,
                                                float* __restrict__ Y, const float* __restrict__ glu_bias,
                                                T* __restrict__ act) {
  using M = MmaType<T>;
  constexpr int WARPS = 8, U = 2;  // U column blocks per load batch
  pdl_trigger();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, grp = lane >> 2, qd = lane & 3;
  const int inter = out / 2;
  const int row0 = blockIdx.x * (GLU ? 8 : 16);
  const int kb_total = (in + 63) / 64;
  const int kb_begin = kb_total * warp / WARPS, kb_end = kb_total * (warp + 1) / WARPS;
  // The A operand's rows grp and grp + 8, and whether they exist.
  const int ra = row0 + grp, rb = GLU ? inter + row0 + grp : row0 + grp + 8;
  const bool la = GLU ? row0 + grp < inter : ra < out, lb = GLU ? la : rb < out;
  const T* wa = W + int64_t(la ? ra : 0) * in;
  const T* wb = W + int64_t(lb ? rb : 0) * in;
  uint4 wv[U][4];
  auto load_w = [&](int kb) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c0 = (kb + u) * 64 + 8 * qd, c1 = c0 + 32;
      const bool in_range = kb + u < kb_end;
      const uint4 z = make_uint4(0, 0, 0, 0);
      wv[u][0] = in_range && la && c0 < in ? __ldcs(reinterpret_cast<const uint4*>(wa + c0)) : z;
      wv[u][1] = in_range && la && c1 < in ? __ldcs(reinterpret_cast<const uint4*>(wa + c1)) : z;
      wv[u][2] = in_range && lb && c0 < in ? __ldcs(reinterpret_cast<const uint4*>(wb + c0)) : z;
      wv[u][3] = in_range && lb && c1 < in ? __ldcs(reinterpret_cast<const uint4*>(wb + c1)) : z;
    }
  };
  float acc[NT][4];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.f;
  int kb = kb_begin;
  if (kb < kb_end) load_w(kb);  // before the wait: overlaps the kernel that writes X
  pdl_wait();
  for (bool loaded = true; kb < kb_end; kb += U, loaded = false) {
    if (!loaded) load_w(kb);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (kb + u >= kb_end) break;
      const int c0 = (kb + u) * 64 + 8 * qd, c1 = c0 + 32;
      // Row grp's and row grp + 8's words of columns c0.. and c1..
      const uint32_t* ga0 = reinterpret_cast<const uint32_t*>(&wv[u][0]);
      const uint32_t* ga1 = reinterpret_cast<const uint32_t*>(&wv[u][1]);
      const uint32_t* gb0 = reinterpret_cast<const uint32_t*>(&wv[u][2]);
      const uint32_t* gb1 = reinterpret_cast<const uint32_t*>(&wv[u][3]);
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const int xr = t * 8 + grp;
        const uint4 z = make_uint4(0, 0, 0, 0);
        const T* xp = X + int64_t(xr < R ? xr : 0) * in;
        const uint4 x0 = xr < R && c0 < in ? __ldg(reinterpret_cast<const uint4*>(xp + c0)) : z;
        const uint4 x1 = xr < R && c1 < in ? __ldg(reinterpret_cast<const uint4*>(xp + c1)) : z;
        const uint32_t* xw0 = reinterpret_cast<const uint32_t*>(&x0);
        const uint32_t* xw1 = reinterpret_cast<const uint32_t*>(&x1);
        // Words 0..3 of each 16-byte vector are two MMAs' (lo, hi) pairs.
        M::mma(acc[t], {ga0[0], gb0[0], ga0[1], gb0[1]}, xw0[0], xw0[1]);
        M::mma(acc[t], {ga0[2], gb0[2], ga0[3], gb0[3]}, xw0[2], xw0[3]);
        M::mma(acc[t], {ga1[0], gb1[0], ga1[1], gb1[1]}, xw1[0], xw1[1]);
        M::mma(acc[t], {ga1[2], gb1[2], ga1[3], gb1[3]}, xw1[2], xw1[3]);
      }
    }
  }
  // acc[t]: rows grp and grp+8, X rows t*8 + 2qd and +1. Sum over warps.
  __shared__ float part[WARPS][16][8 * NT + 1];
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    part[warp][grp][t * 8 + 2 * qd] = acc[t][0];
    part[warp][grp][t * 8 + 2 * qd + 1] = acc[t][1];
    part[warp][grp + 8][t * 8 + 2 * qd] = acc[t][2];
    part[warp][grp + 8][t * 8 + 2 * qd + 1] = acc[t][3];
  }
  __syncthreads();
  if constexpr (GLU) {
    for (int e = threadIdx.x; e < 8 * 8 * NT; e += blockDim.x) {
      const int row = e & 7, n = e >> 3, i = row0 + row;
      if (n >= R || i >= inter) continue;
      float g = glu_bias ? glu_bias[i] : 0.f, u = glu_bias ? glu_bias[inter + i] : 0.f;
#pragma unroll
      for (int w = 0; w < WARPS; ++w) {
        g += part[w][row][n];
        u += part[w][row + 8][n];
      }
      act[int64_t(n) * inter + i] = from_f<T>(silu_gate(g, u));
    }
  } else {
    for (int e = threadIdx.x; e < 16 * 8 * NT; e += blockDim.x) {
      const int row = e & 15, n = e >> 4;
      if (n >= R || row0 + row >= out) continue;
      float a = 0.f;
#pragma unroll
      for (int w = 0; w < WARPS; ++w) a += part[w][row][n];
      Y[int64_t(n) * out + row0 + row] = a;
    }
  }
}

// gemm_rows geometry: a row block is 128 rows of W (8 warps x 16), walked in
// stages of 128 columns (4 chunks of 32).
constexpr int kRowsWarps = 8, kRowsBlock = 16 * kRowsWarps, kRowsStage = 128;

template <typename T>
struct GemmRowsArgs {
  const T* W;  // (out, in) row-major
  const T* X;  // (R, in)
  int in, out, R;
  int row_blocks;  // GLU: ceil(out / 2 / 64), else ceil(out / 128)
  float* Y;  // (R, out) fp32, unless act takes the result
  const float* glu_bias;  // GLU: [gate | up] bias or null
  T* act;  // GLU: (R, out / 2)
  float* ws;  // (gridDim.x + row_blocks) partial tiles of (16 MT, 128) fp32
  unsigned* counters;  // arrivals per row block, zero between launches
};

// Which block of a stream-K grid of g blocks over u units owns unit x
// (block b owns [b u / g, (b + 1) u / g)).
__device__ __forceinline__ int stream_k_owner(int64_t x, int64_t u, int g) { return int(((x + 1) * g - 1) / u); }

// Y (R, out) = X (R, in) W^T for 9..64 rows on tensor cores (MT tiles of 16
// rows of X), streaming W from DRAM once. m16n8k16 MMAs with X as the A
// operand and W as B: a lane's 16-byte load of a W row (columns 8qd..8qd+7 of a 32-column chunk) is the B operand
// of two MMAs as it stands (a dot product does not depend on the order of
// its terms, so the k order is permuted to match), and each A fragment read
// from shared memory serves both of the warp's 8-row W tiles. X goes through
// registers into shared memory already in fragment order (one 16-byte read
// per A operand, conflict-free, and no register shuffling before an MMA); the
// 8 warps of a block share it. Each warp has the next two stages of its W in
// flight (three register stages) while it uses one, and the next stage's X.
// With one stage in flight the kernel lost to cuBLAS at 32 rows; with two it
// beats it at 16 and 32 (docs/gpu.md), so the engine uses it up to 32. From
// two tiles of 16 rows on, the three stages take 178-234 registers: one
// block per SM. X is read at L2 (ld.global.cg): the kernel that writes it is
// still running when this one starts (PDL), so it must not come through the
// non-coherent path.
//
// Stream-K: the grid is the resident block count (at most the number of
// units, so that every block owns one) and block b takes an equal run of the
// (row block, stage) units, so every SM streams the same number of
// bytes in one wave whatever the matrix shape. A row block whose stages one
// block owns entirely is written straight from registers; one shared by
// several blocks gets their fp32 partial tiles (L2-resident), and the last to
// arrive sums them and writes the result, then rearms the counter. A block's
// partial for row block rb is tile b + rb of ws: along the unit range the
// (block, row block) pairs form a staircase, so b + rb never repeats.
//
// GLU: a row block is 64 gate rows and the up rows of the same units (warp w:
// units 8w..8w+7, its first W tile the gates and its second the ups), and the
// result is act (R, out/2) = silu(gate + b) * (up + b') in T. in % 128 == 0;
// rows past out or R are zeros.
template <typename T, int MT, bool GLU>
__global__ void __launch_bounds__(256, MT <= 1 ? 2 : 1) gemm_rows(GemmRowsArgs<T> p) {
  using M = MmaType<T>;
  constexpr int RP = 16 * MT, TILE = RP * kRowsBlock;
  // Two stages of X in fragment order: [m tile][chunk][MMA of the chunk][lane].
  constexpr int FRAGS = MT * 4 * 2 * 32;
  __shared__ uint4 xs[2][FRAGS];
  __shared__ bool last;
  pdl_trigger();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, grp = lane >> 2, qd = lane & 3;
  const int in = p.in, out = p.out, inter = out / 2;
  const int S = in / kRowsStage;
  const int64_t units = int64_t(p.row_blocks) * S;
  const int64_t begin = units * blockIdx.x / gridDim.x, end = units * (blockIdx.x + 1) / gridDim.x;

  // X pieces of this thread: piece xj (columns 8 xj..) of rows xr + 16k, one
  // per m tile k; word i of row g (+8 hi) of a tile goes to the A fragment of
  // MMA i / 2, register hi + 2 (i % 2).
  const int xj = threadIdx.x % 16, xr = threadIdx.x / 16;
  const int xsmem = (((xj / 4) * 2) * 32 + (xr % 8) * 4 + xj % 4) * 4 + xr / 8;  // m tile 0, in 32-bit words

  using WStage = uint4[2][4];  // [W tile][32-column chunk]
  float acc[MT][2][4];
  WStage w0, w1, w2;
  uint4 xv[MT];
  bool waited = false;
  for (int64_t seg = begin; seg < end;) {
    const int rb = int(seg / S), s0 = int(seg - int64_t(rb) * S);
    const int nst = int(min(end, int64_t(rb + 1) * S) - seg);
    seg += nst;
    // This lane's W rows: tile 0 row grp, tile 1 row 8 + grp of the warp's
    // 16 (GLU: one unit's gate and up rows); rows past the matrix read row 0
    // and their results are dropped.
    const int unit = rb * (kRowsBlock / 2) + warp * 8 + grp;
    const int r0 = GLU ? unit : rb * kRowsBlock + warp * 16 + grp, r1 = GLU ? inter + unit : r0 + 8;
    const bool l0 = GLU ? unit < inter : r0 < out, l1 = GLU ? l0 : r1 < out;
    const uint4* pw0 = reinterpret_cast<const uint4*>(p.W + int64_t(l0 ? r0 : 0) * in + int64_t(s0) * kRowsStage + 8 * qd);
    const uint4* pw1 = reinterpret_cast<const uint4*>(p.W + int64_t(l1 ? r1 : 0) * in + int64_t(s0) * kRowsStage + 8 * qd);
    auto load_w = [&](WStage& w) {  // chunk c: columns 32c + 8qd.. = uint4 4c
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        w[0][c] = __ldcs(pw0 + 4 * c);
        w[1][c] = __ldcs(pw1 + 4 * c);
      }
      pw0 += kRowsStage / 8;
      pw1 += kRowsStage / 8;
    };
    const T* px[MT];
#pragma unroll
    for (int k = 0; k < MT; ++k) {
      const int r = xr + 16 * k;
      px[k] = p.X + int64_t(r < p.R ? r : 0) * in + int64_t(s0) * kRowsStage + 8 * xj;
    }
    auto load_x = [&]() {
#pragma unroll
      for (int k = 0; k < MT; ++k) {
        xv[k] = xr + 16 * k < p.R ? __ldcg(reinterpret_cast<const uint4*>(px[k])) : make_uint4(0, 0, 0, 0);
        px[k] += kRowsStage;
      }
    };
    auto store_x = [&](int buf) {
      uint32_t* base = reinterpret_cast<uint32_t*>(xs[buf]) + xsmem;
#pragma unroll
      for (int k = 0; k < MT; ++k) {
        uint32_t* d = base + k * (4 * 2 * 32 * 4);  // m tile k: 4 chunks x 2 MMAs x 32 lanes x 4 words on
        d[0] = xv[k].x;
        d[2] = xv[k].y;
        d[128] = xv[k].z;  // the chunk's second MMA: 32 lanes x 4 words on
        d[130] = xv[k].w;
      }
    };
    auto compute = [&](const WStage& w, int buf) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
#pragma unroll
        for (int m = 0; m < MT; ++m) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const uint4 a = xs[buf][((m * 4 + c) * 2 + h) * 32 + lane];
            const uint32_t* w0w = reinterpret_cast<const uint32_t*>(&w[0][c]);
            const uint32_t* w1w = reinterpret_cast<const uint32_t*>(&w[1][c]);
            M::mma(acc[m][0], {a.x, a.y, a.z, a.w}, w0w[2 * h], w0w[2 * h + 1]);
            M::mma(acc[m][1], {a.x, a.y, a.z, a.w}, w1w[2 * h], w1w[2 * h + 1]);
          }
        }
      }
    };
    // Stage st: every warp is done with stage st - 1, so its buffer takes
    // stage st + 1 (loaded during stage st - 1), and stage st + 2 loads.
    auto next_stage = [&](int st) {
      __syncthreads();
      if (st + 1 < nst) {
        store_x((st + 1) & 1);
        if (st + 2 < nst) load_x();
      }
    };

#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int n = 0; n < 2; ++n) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.f;
    // Two stages of W in flight ahead of the one computed.
    load_w(w0);
    if (nst > 1) load_w(w1);
    if (!waited) {  // the first weights load before the wait: they overlap the kernel that writes X
      pdl_wait();
      waited = true;
    } else {
      __syncthreads();  // every warp is done with the last segment's X buffers
    }
    load_x();
    store_x(0);
    if (nst > 1) load_x();
    for (int st = 0; st < nst; st += 3) {
      next_stage(st);
      if (st + 2 < nst) load_w(w2);
      compute(w0, st & 1);
      if (st + 1 >= nst) break;
      next_stage(st + 1);
      if (st + 3 < nst) load_w(w0);
      compute(w1, (st + 1) & 1);
      if (st + 2 >= nst) break;
      next_stage(st + 2);
      if (st + 4 < nst) load_w(w1);
      compute(w2, st & 1);  // (st + 2) & 1
    }

    // acc[m][n]: X rows (tokens) 16m + grp (c0, c1) and + 8 (c2, c3); W rows
    // 8n + 2qd (c0, c2) and + 1 (c1, c3) of the warp's 16.
    auto finish = [&](int tok, int row_g, float g0, float u0) {  // one output (GLU: one unit)
      if (tok >= p.R) return;
      if constexpr (GLU) {
        if (row_g >= inter) return;
        const float g = g0 + (p.glu_bias ? p.glu_bias[row_g] : 0.f);
        const float u = u0 + (p.glu_bias ? p.glu_bias[inter + row_g] : 0.f);
        p.act[int64_t(tok) * inter + row_g] = from_f<T>(silu_gate(g, u));
      } else {
        if (row_g < out) p.Y[int64_t(tok) * out + row_g] = g0;
      }
    };
    const int first = stream_k_owner(int64_t(rb) * S, units, gridDim.x);
    const int owners = stream_k_owner(int64_t(rb + 1) * S - 1, units, gridDim.x) - first + 1;
    if (owners == 1) {
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int tok = 16 * m + grp + 8 * (c >> 1), col = 2 * qd + (c & 1);
          if constexpr (GLU) {
            finish(tok, rb * (kRowsBlock / 2) + warp * 8 + col, acc[m][0][c], acc[m][1][c]);
          } else {
            finish(tok, rb * kRowsBlock + warp * 16 + col, acc[m][0][c], 0.f);
            finish(tok, rb * kRowsBlock + warp * 16 + 8 + col, acc[m][1][c], 0.f);
          }
        }
      continue;
    }
    // Shared row block: this block's partial tile, (token, local row).
    float* mine = p.ws + int64_t(blockIdx.x + rb) * TILE;
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int tok = 16 * m + grp + 8 * h, l = warp * 16 + 8 * n + 2 * qd;
          *reinterpret_cast<float2*>(mine + tok * kRowsBlock + l) = make_float2(acc[m][n][2 * h], acc[m][n][2 * h + 1]);
        }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      last = atomicAdd(p.counters + rb, 1u) == unsigned(owners - 1);
      if (last) p.counters[rb] = 0;  // every owner has arrived: rearmed for the next launch
    }
    __syncthreads();
    if (!last) continue;
    __threadfence();
    // Sum the owners' tiles: each thread MT pairs of float4 (GLU: a gate run
    // of 4 units and their up run; else two runs of 4 rows), all owners'
    // loads of a round in flight together.
    float4 sa[MT], sb[MT];
    int ia[MT];
#pragma unroll
    for (int v = 0; v < MT; ++v) {
      const int c = threadIdx.x + v * 256;  // pair index: token c / 16, 4-row run c % 16 of the first half
      const int n = c / 16, j = c % 16;
      ia[v] = n * kRowsBlock + (j / 2) * 16 + (j % 2) * 4;
      sa[v] = sb[v] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    auto add4 = [](float4& a, const float4 b) { a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w; };
#pragma unroll 2
    for (int o = 0; o < owners; ++o) {
      const float* tile = p.ws + int64_t(first + o + rb) * TILE;
#pragma unroll
      for (int v = 0; v < MT; ++v) {
        add4(sa[v], __ldcg(reinterpret_cast<const float4*>(tile + ia[v])));
        add4(sb[v], __ldcg(reinterpret_cast<const float4*>(tile + ia[v] + 8)));
      }
    }
#pragma unroll
    for (int v = 0; v < MT; ++v) {
      const int c = threadIdx.x + v * 256, n = c / 16, j = c % 16;
      const float a[4] = {sa[v].x, sa[v].y, sa[v].z, sa[v].w}, b[4] = {sb[v].x, sb[v].y, sb[v].z, sb[v].w};
      const int l = (j / 2) * 16 + (j % 2) * 4;  // local row of a[0]; b[0] is row l + 8
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if constexpr (GLU) {
          finish(n, rb * (kRowsBlock / 2) + (j / 2) * 8 + (j % 2) * 4 + k, a[k], b[k]);
        } else {
          finish(n, rb * kRowsBlock + l + k, a[k], 0.f);
          finish(n, rb * kRowsBlock + l + 8 + k, b[k], 0.f);
        }
      }
    }
  }
}

// Dim of element i (0..15) of the 16 dims lane position x holds within a span
// (K: x = qd over each 64-dim rotate-half; V: x = grp, or an O column n, over
// all 128). Contiguous (PERM = false): 16x + i. Coalesced (PERM = true): two
// runs of 8, 8x + i and SPAN/2 + 8x + (i - 8), so the lanes that read one
// entry read adjacent 16-byte pieces and a load instruction fills whole
// 32-byte sectors instead of halves of twice as many.
template <bool PERM, int SPAN>
__device__ __forceinline__ int lane_dim(int x, int i) {
  if constexpr (PERM) return i < 8 ? 8 * x + i : SPAN / 2 + 8 * x + (i - 8);
  return 16 * x + i;
}

template <typename T, int G, int MB = 2, bool PIPE = true, bool PERM = true, bool ROPE2 = true, bool FAST = true>
__global__ void __launch_bounds__(kThreads, MB) attn_decode128_mma(AttnParams p) {
  static_assert(G == 4 || G == 8, "attn_decode128_mma: 4 or 8 query heads per KV head");
  using M = MmaType<T>;
  constexpr int HD = 128, NW = kThreads / 32, TILE = 16;
  if (p.trigger) pdl_trigger();
  const int split = blockIdx.x, kvh = blockIdx.y, r = blockIdx.z;
  const RowDesc row = p.rows[r];
  const int n = row.n;
  const int begin = split * p.chunk;
  if (n == 0 || begin >= n) return empty_row_store<T>(p, row, r, kvh, split);
  const int end = min(n, begin + p.chunk);
  const SeqDesc s = p.seqs[row.seq];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int grp = lane >> 2, qd = lane & 3;
  const bool rope = p.rope_cos != nullptr;
  const bool real_q = grp < G;  // rows G..15 of the query operand are zero
  const int q_pos = n - 1;

  const int64_t slot_stride = int64_t(p.kv_heads) * HD;
  const int64_t layer_off = int64_t(p.layer) * s.slots * slot_stride + int64_t(kvh) * HD;
  const T* kc = static_cast<const T*>(s.k) + layer_off;
  const T* vc = static_cast<const T*>(s.v) + layer_off;
  const int k_off = p.heads * HD + kvh * HD, v_off = (p.heads + p.kv_heads) * HD + kvh * HD;
  const ContextMap ctx(s, row, end);
  const int i_fresh = ctx.i_fresh;
  // Elements da..da+7 and db..db+7 of a cached K or V row, as 8 T pairs.
  auto ld2 = [](const T* src, int da, int db, uint32_t* w) {
    const uint4 a = __ldcs(reinterpret_cast<const uint4*>(src + da));
    const uint4 b = __ldcs(reinterpret_cast<const uint4*>(src + db));
    w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w;
    w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
  };
  // 16 elements of entry i's K or V, dims da..da+7 and db..db+7 past off in a
  // fresh row, as 8 T pairs; zeros past the end of the split. Entries of this
  // step come from the fresh QKV rows, which exist only after pdl_wait(): with
  // fresh = false they are left as they are (the caller reloads them after
  // the wait).
  auto load16 = [&](const T* base, int off, int i, int da, int db, uint32_t (&w)[8], bool fresh) {
    if (i >= end) {
#pragma unroll
      for (int k = 0; k < 8; ++k) w[k] = 0u;
    } else if (i >= i_fresh) {
      if (fresh) {
        const float* f = ctx.fresh_row(p, i) + off;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          w[k] = M::pack(f[da + 2 * k], f[da + 2 * k + 1]);
          w[4 + k] = M::pack(f[db + 2 * k], f[db + 2 * k + 1]);
        }
      }
    } else {
      ld2(base + int64_t(ctx.slot(i)) * slot_stride, da, db, w);
    }
  };
  // Tile registers: keys t0 + grp and t0 + 8 + grp (dims of qd, both
  // halves), values t0 + 2qd, +1, 8 + 2qd, 9 + 2qd (dims of grp).
  uint32_t klo[2][8], khi[2][8], vv[4][8];
  const int kd0 = lane_dim<PERM, 64>(qd, 0), kd1 = lane_dim<PERM, 64>(qd, 8);
  const int vd0 = lane_dim<PERM, 128>(grp, 0), vd1 = lane_dim<PERM, 128>(grp, 8);
  // A tile whose 16 entries are all cached in consecutive slots (no fresh
  // entry, no end, no sink/window boundary or ring wrap inside it) is read
  // from one base slot with lane offsets fixed for the whole kernel; the
  // others entry by entry.
  auto tile_slot = [&](int t0) -> int {
    if (!FAST || t0 + TILE > i_fresh) return -1;  // i_fresh <= end
    const int s0 = ctx.slot(t0);
    return ctx.slot(t0 + TILE - 1) == s0 + TILE - 1 ? s0 : -1;
  };
  // Byte offsets of this lane's first K and V pieces in a tile that starts at
  // slot 0; the rest lie at fixed distances (lane_dim: PERM's second run of 8
  // is 32 K dims or 64 V dims on, the rotate-half partner 64 K dims).
  const int64_t stride_b = slot_stride * int64_t(sizeof(T));
  const int kofs = (grp * int(slot_stride) + kd0) * int(sizeof(T));
  const int vofs = (2 * qd * int(slot_stride) + vd0) * int(sizeof(T));
  constexpr int kRun = (PERM ? 32 : 8) * int(sizeof(T)), vRun = (PERM ? 64 : 8) * int(sizeof(T));
  constexpr int kHalf = 64 * int(sizeof(T));
  auto ld16 = [](const char* src) { return __ldcs(reinterpret_cast<const uint4*>(src)); };
  auto put = [](uint32_t* w, uint4 a, uint4 b) {
    w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w;
    w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
  };
  auto load_k = [&](int t0, bool fresh) {
    const int s0 = tile_slot(t0);
    if (s0 >= 0) {
      const char* src = reinterpret_cast<const char*>(kc) + int64_t(s0) * stride_b + kofs;
#pragma unroll
      for (int h = 0; h < 2; ++h, src += 8 * stride_b) {
        put(klo[h], ld16(src), ld16(src + kRun));
        put(khi[h], ld16(src + kHalf), ld16(src + kHalf + kRun));
      }
      return;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      load16(kc, k_off, t0 + 8 * h + grp, kd0, kd1, klo[h], fresh);
      load16(kc, k_off, t0 + 8 * h + grp, 64 + kd0, 64 + kd1, khi[h], fresh);
    }
  };
  auto load_v = [&](int t0, bool fresh) {
    const int e[4] = {0, 1, 8, 9};  // + 2qd
    const int s0 = tile_slot(t0);
    if (s0 >= 0) {
      const char* src = reinterpret_cast<const char*>(vc) + int64_t(s0) * stride_b + vofs;
#pragma unroll
      for (int k = 0; k < 4; ++k) put(vv[k], ld16(src + e[k] * stride_b), ld16(src + e[k] * stride_b + vRun));
      return;
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) load16(vc, v_off, t0 + 2 * qd + e[k], vd0, vd1, vv[k], fresh);
  };

  // The first tile's cached entries are read before the wait: they do not
  // depend on the qkv GEMV this kernel is a programmatic dependent of.
  const int t_first = begin + warp * TILE;
  if (PIPE && t_first < end) {
    load_k(t_first, false);
    load_v(t_first, false);
  }
  pdl_wait();
  if (t_first < end && (!PIPE || t_first + TILE > i_fresh)) {
    load_k(t_first, true);
    load_v(t_first, true);
  }

  // Query operand: query grp rotated to q_pos, scaled, as T pairs.
  uint32_t qa[8][2];
  {
    float lo[16], hi[16];
    if (real_q) {
      const float* qr = p.qkv + int64_t(r) * p.qkv_dim + (int64_t(kvh) * G + grp) * HD;
#pragma unroll
      for (int i = 0; i < 16; i += 4) {
        const int d = lane_dim<PERM, 64>(qd, i);
        const float4 a = *reinterpret_cast<const float4*>(qr + d);
        const float4 b = *reinterpret_cast<const float4*>(qr + 64 + d);
        lo[i] = a.x; lo[i + 1] = a.y; lo[i + 2] = a.z; lo[i + 3] = a.w;
        hi[i] = b.x; hi[i + 1] = b.y; hi[i + 2] = b.z; hi[i + 3] = b.w;
      }
      if (rope) {
        const float* cr = p.rope_cos + int64_t(q_pos) * 64;
        const float* sr = p.rope_sin + int64_t(q_pos) * 64;
#pragma unroll
        for (int i = 0; i < 16; ++i) {
          const int d = lane_dim<PERM, 64>(qd, i);
          const float c = cr[d], sn = sr[d];
          const float a = lo[i] * c - hi[i] * sn, b = hi[i] * c + lo[i] * sn;
          lo[i] = a;
          hi[i] = b;
        }
      }
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        lo[i] *= p.scale;
        hi[i] *= p.scale;
      }
    } else {
#pragma unroll
      for (int i = 0; i < 16; ++i) lo[i] = hi[i] = 0.f;
    }
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const float* src = c < 4 ? lo + 4 * c : hi + 4 * (c - 4);
      qa[c][0] = M::pack(src[0], src[1]);
      qa[c][1] = M::pack(src[2], src[3]);
    }
  }
  const float slope = (p.alibi && real_q) ? p.alibi[kvh * G + grp] : 0.f;

  float m = -INFINITY, l = 0.f;
  float o[16][2];
#pragma unroll
  for (int j = 0; j < 16; ++j) o[j][0] = o[j][1] = 0.f;

  for (int t0 = t_first; t0 < end; t0 += NW * TILE) {
    const int tn = t0 + NW * TILE;
    // Keys rotated to their entries' positions t0 + 8h + grp: ROPE2 in T
    // arithmetic on pairs (T tables), else in fp32.
    if (rope) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int e = t0 + 8 * h + grp;
        if (e >= end) continue;
        if constexpr (ROPE2) {
          const T* cr = static_cast<const T*>(p.rope_cos_t) + int64_t(e) * 64;
          const T* sr = static_cast<const T*>(p.rope_sin_t) + int64_t(e) * 64;
          const uint4 c0 = __ldg(reinterpret_cast<const uint4*>(cr + kd0)), c1 = __ldg(reinterpret_cast<const uint4*>(cr + kd1));
          const uint4 s0 = __ldg(reinterpret_cast<const uint4*>(sr + kd0)), s1 = __ldg(reinterpret_cast<const uint4*>(sr + kd1));
          const uint32_t cw[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
          const uint32_t sw[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
#pragma unroll
          for (int k = 0; k < 8; ++k) M::rotate(klo[h][k], khi[h][k], cw[k], sw[k]);
        } else {
          const float* cr = p.rope_cos + int64_t(e) * 64;
          const float* sr = p.rope_sin + int64_t(e) * 64;
#pragma unroll
          for (int v4 = 0; v4 < 4; ++v4) {
            const int d = lane_dim<PERM, 64>(qd, 4 * v4);
            const float4 c4 = __ldg(reinterpret_cast<const float4*>(cr + d));
            const float4 s4 = __ldg(reinterpret_cast<const float4*>(sr + d));
            const float cs[4] = {c4.x, c4.y, c4.z, c4.w}, sn[4] = {s4.x, s4.y, s4.z, s4.w};
#pragma unroll
            for (int pr = 0; pr < 2; ++pr) {
              const int k = 2 * v4 + pr;  // word k holds elements 2k, 2k+1 of the 16
              const float2 a = M::unpack(klo[h][k]), b = M::unpack(khi[h][k]);
              const float c0 = cs[2 * pr], s0 = sn[2 * pr], c1 = cs[2 * pr + 1], s1 = sn[2 * pr + 1];
              klo[h][k] = M::pack(a.x * c0 - b.x * s0, a.y * c1 - b.y * s1);
              khi[h][k] = M::pack(b.x * c0 + a.x * s0, b.y * c1 + a.y * s1);
            }
          }
        }
      }
    }
    // S (16 queries x 8 entries, two halves) = Q K^T; scores of entries
    // t0 + 8h + 2qd (+1) for query grp.
    float sc[2][2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        const uint32_t* kw = c < 4 ? klo[h] + 2 * c : khi[h] + 2 * (c - 4);
        const uint32_t a[4] = {qa[c][0], 0u, qa[c][1], 0u};
        M::mma(acc, a, kw[0], kw[1]);
      }
      sc[h][0] = acc[0];
      sc[h][1] = acc[1];
    }
    // The keys are consumed: the next tile's keys load while this tile's
    // softmax and P V run.
    if (PIPE && tn < end) load_k(tn, true);
    // Online softmax over the tile for query grp (the quad holds its 16 scores).
    float mx = -INFINITY;
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int e = t0 + 8 * h + 2 * qd + k;
        float x = sc[h][k];
        if (p.alibi) x -= slope * float(q_pos - e);
        if (e >= end) x = -INFINITY;
        sc[h][k] = x;
        mx = fmaxf(mx, x);
      }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m, mx);  // finite: the tile has a valid entry
    const float alpha = __expf(m - m_new);
    float ps = 0.f;
    uint32_t pa[4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float p0 = __expf(sc[h][0] - m_new), p1 = __expf(sc[h][1] - m_new);
      ps += p0 + p1;
      pa[2 * h] = M::pack(p0, p1);  // a0 (entries 2qd, 2qd+1), a2 (8+2qd, 9+2qd)
      pa[2 * h + 1] = 0u;           // rows 8..15: padding queries
    }
    ps += __shfl_xor_sync(0xffffffffu, ps, 1);
    ps += __shfl_xor_sync(0xffffffffu, ps, 2);
    l = l * alpha + ps;
    m = m_new;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      o[j][0] *= alpha;
      o[j][1] *= alpha;
    }
    // P V.
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const uint32_t sel = (j & 1) ? 0x7632u : 0x5410u;
      const uint32_t b0 = __byte_perm(vv[0][j >> 1], vv[1][j >> 1], sel);
      const uint32_t b1 = __byte_perm(vv[2][j >> 1], vv[3][j >> 1], sel);
      float d[4] = {o[j][0], o[j][1], 0.f, 0.f};
      M::mma(d, pa, b0, b1);
      o[j][0] = d[0];
      o[j][1] = d[1];
    }
    if (tn < end) {
      if (!PIPE) load_k(tn, true);
      load_v(tn, true);
    }
  }

  // Merge the warps' (m, l, O) and write the split's partial. Column n of
  // n-tile j is V dim lane_dim(n, j); the lane holds columns 2qd and 2qd + 1.
  __shared__ float sm[NW][G], sl[NW][G], sacc[NW][G][HD];
  if (real_q && qd == 0) {
    sm[warp][grp] = m;
    sl[warp][grp] = l;
  }
  if (real_q) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      sacc[warp][grp][lane_dim<PERM, 128>(2 * qd, j)] = o[j][0];
      sacc[warp][grp][lane_dim<PERM, 128>(2 * qd + 1, j)] = o[j][1];
    }
  }
  __syncthreads();
  finish_split<T, G>(p, row, r, kvh, split, sm, sl, sacc);
}

// ---- Prefill of a chunk that starts an empty cache and fits in it ----------
// Every token t of such a chunk sees tokens 0..t at positions 0..t (nothing is
// evicted), i.e. plain causal attention, so it runs as batched GEMMs over
// query blocks instead of one context scan per token.

// Q (kv_heads, count, G, hd), K and V (kv_heads, count, hd), T, rotated at
// position i; from the chunk's fp32 QKV rows.
template <typename T>
__global__ void causal_prep(const float* qkv, int row0, int count, int heads, int kv_heads, int hd, int rotary_dim,
                            int qkv_dim, const float* rope_cos, const float* rope_sin, T* Q, T* K, T* V) {
  const int i = blockIdx.x, hh = blockIdx.y;
  const int G = heads / kv_heads, half = rotary_dim / 2;
  const float* src = qkv + int64_t(row0 + i) * qkv_dim + int64_t(hh) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float x = src[d];
    if (hh < heads + kv_heads && rope_cos && d < rotary_dim) {
      const int ii = d < half ? d : d - half;
      const float c = rope_cos[int64_t(i) * half + ii], sn = rope_sin[int64_t(i) * half + ii];
      const float o = src[d < half ? d + half : d - half];
      x = d < half ? x * c - o * sn : x * c + o * sn;
    }
    if (hh < heads) {
      const int kvh = hh / G, g = hh % G;
      Q[((int64_t(kvh) * count + i) * G + g) * hd + d] = from_f<T>(x);
    } else if (hh < heads + kv_heads) {
      K[(int64_t(hh - heads) * count + i) * hd + d] = from_f<T>(x);
    } else {
      V[(int64_t(hh - heads - kv_heads) * count + i) * hd + d] = from_f<T>(x);
    }
  }
}

// Scores S (kv_heads, rows = (b - a) * G, b) of query block [a, b) to
// probabilities P (T): scale, ALiBi, causal mask j <= i, softmax.
template <typename T>
__global__ void causal_softmax(const float* S, int a, int b, int G, float scale, const float* alibi, T* P) {
  __shared__ float red[32];
  const int r = blockIdx.x, kvh = blockIdx.y;
  const int64_t rows = int64_t(b - a) * G;
  const int i = a + r / G, g = r % G;
  const float slope = alibi ? alibi[kvh * G + g] : 0.f;
  const float* sr = S + (int64_t(kvh) * rows + r) * b;
  T* pr = P + (int64_t(kvh) * rows + r) * b;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) mx = fmaxf(mx, sr[j] * scale - float(i - j) * slope);
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = mx;
  __syncthreads();
  mx = -INFINITY;
  for (int w = 0; w < int(blockDim.x >> 5); ++w) mx = fmaxf(mx, red[w]);
  float sum = 0.f;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) sum += __expf(sr[j] * scale - float(i - j) * slope - mx);
  sum = block_sum(sum, red);
  const float inv = 1.f / sum;
  for (int j = threadIdx.x; j < b; j += blockDim.x)
    pr[j] = from_f<T>(j <= i ? __expf(sr[j] * scale - float(i - j) * slope - mx) * inv : 0.f);
}

// O (kv_heads, (b - a) * G, hd) fp32 into the attention rows of the chunk.
template <typename T>
__global__ void causal_scatter(const float* O, int row0, int a, int b, int G, int heads, int hd, T* out) {
  const int r = blockIdx.x, kvh = blockIdx.y;
  const int64_t rows = int64_t(b - a) * G;
  const int i = a + r / G, g = r % G;
  const float* o = O + (int64_t(kvh) * rows + r) * hd;
  T* dst = out + int64_t(row0 + i) * heads * hd + int64_t(kvh * G + g) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) dst[d] = from_f<T>(o[d]);
}

// Softmax statistics of some logits: maximum, log-sum-exp and argmax (ties:
// the lowest id; `none` when every value is NaN). Two merge associatively
// (the larger maximum rescales the other's sum), so a row is reduced in any
// grouping: per thread, per warp, per block, per part of a row.
struct RowStats {
  float max, lse;
  int64_t arg;
};
__device__ __forceinline__ void merge_stats(float& m, float& sum, int64_t& arg, float m2, float sum2, int64_t arg2) {
  if (m2 > m || (m2 == m && arg2 < arg)) {
    sum = sum2 + (m == -INFINITY ? 0.f : sum * __expf(m - m2));
    m = m2;
    arg = arg2;
  } else if (m2 != -INFINITY) {
    sum += sum2 * __expf(m2 - m);
  }
}
__device__ __forceinline__ void merge_warp(float& m, float& sum, int64_t& arg) {
  for (int o = 16; o > 0; o >>= 1)
    merge_stats(m, sum, arg, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, sum, o),
                __shfl_xor_sync(0xffffffffu, arg, o));
}

// Block-wide over x[begin, end): the statistics, the same in every thread,
// with the raw values also copied to copy[begin, end) when copy is not null.
// Each thread has four loads in flight at a time. Every read of x is done
// when it returns. blockDim.x: a multiple of 32, at most 1024.
__device__ __forceinline__ RowStats block_stats(const float* x, int64_t begin, int64_t end, int64_t none, float* copy) {
  float m = -INFINITY, sum = 0.f;
  int64_t arg = none;
  const int64_t step = blockDim.x;
  for (int64_t i0 = begin + threadIdx.x; i0 < end; i0 += 4 * step) {
    float v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = i0 + u * step < end ? x[i0 + u * step] : -INFINITY;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int64_t i = i0 + u * step;
      if (i >= end) break;
      if (copy) copy[i] = v[u];
      if (v[u] > m) {
        sum = sum * __expf(m - v[u]) + 1.f;
        m = v[u];
        arg = i;
      } else {
        sum += __expf(v[u] - m);
      }
    }
  }
  merge_warp(m, sum, arg);
  __shared__ float sm[32], ss[32];
  __shared__ int64_t sa[32];
  __shared__ RowStats out;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = sum;
    sa[warp] = arg;
  }
  __syncthreads();
  if (warp == 0) {
    m = lane < warps ? sm[lane] : -INFINITY;
    sum = lane < warps ? ss[lane] : 0.f;
    arg = lane < warps ? sa[lane] : none;
    merge_warp(m, sum, arg);
    if (lane == 0) out = RowStats{m, m + __logf(sum), arg};
  }
  __syncthreads();
  return out;
}

// Each sequence's next token from its last row of logits, on `parts` blocks
// per sequence (blockIdx.x: the part, blockIdx.y: the sequence). Every block
// takes the statistics of its part of the row and copies the part to
// NextDesc::keep raw; the last block of a sequence to finish (an arrival
// counter it resets) merges the parts in order, writes the argmax with its
// log-probability to `top`, the log-sum-exp after the kept logits
// (keep[vocab]: the kept distribution is keep[i] - keep[vocab]), and with
// NextDesc::inplace turns the row into its log-softmax. A programmatic
// dependent of the LM head.
__global__ void __launch_bounds__(1024) next_top(float* logits, int64_t vocab, const NextDesc* descs, NextTop* top,
                                                 float* part_stats, int* counters) {
  const int part = blockIdx.x, parts = gridDim.x, seq = blockIdx.y;
  const NextDesc d = descs[seq];
  pdl_wait();
  float* row = logits + d.out * vocab;
  const int64_t begin = vocab * part / parts, end = vocab * (part + 1) / parts;
  RowStats st = block_stats(row, begin, end, vocab, d.keep);
  __shared__ bool last;
  __shared__ float lse;
  if (parts > 1) {
    float* mine = part_stats + (int64_t(seq) * parts + part) * 3;
    if (threadIdx.x == 0) {
      mine[0] = st.max;
      mine[1] = st.lse;
      mine[2] = __int_as_float(int(st.arg));
      __threadfence();
      const int arrived = atomicAdd(&counters[seq], 1);
      last = arrived == parts - 1;
      if (last) counters[seq] = 0;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (threadIdx.x < 32) {  // parts <= 32: one lane a part, merged in a fixed order
      const int lane = threadIdx.x;
      const float* ps = part_stats + int64_t(seq) * parts * 3;
      float m = -INFINITY, sum = 0.f;
      int64_t arg = vocab;
      if (lane < parts) {
        m = __ldcg(ps + lane * 3);
        const float l = __ldcg(ps + lane * 3 + 1);
        sum = m == -INFINITY ? 0.f : __expf(l - m);
        arg = __float_as_int(__ldcg(ps + lane * 3 + 2));
      }
      merge_warp(m, sum, arg);
      if (lane == 0) st = RowStats{m, m + __logf(sum), arg};
    }
  }
  if (threadIdx.x == 0) {
    // A row of NaNs (a model already broken) still names a token in range.
    top[seq] = NextTop{int32_t(st.arg < vocab ? st.arg : 0), st.max - st.lse};
    if (d.keep) d.keep[vocab] = st.lse;
    lse = st.lse;
  }
  __syncthreads();
  if (d.inplace)
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) row[i] -= lse;
}

// In place, one block per listed row of the step's logits: its log-softmax
// (the rows of a sequence with every token's logits, but its last: next_top
// takes that one).
__global__ void __launch_bounds__(1024) logsoftmax_rows(float* logits, int64_t vocab, const int64_t* rows) {
  float* x = logits + rows[blockIdx.x] * vocab;
  const float lse = block_stats(x, 0, vocab, vocab, nullptr).lse;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) x[i] -= lse;
}

// Uniform values in [-scale, scale) from a counter hash (benchmark weights).
template <typename T>
__global__ void fill_random(T* dst, int64_t n, uint64_t seed, float scale) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = seed + uint64_t(e) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = float(z >> 40) * (1.0f / 16777216.0f);
    dst[e] = from_f<T>((2.f * u - 1.f) * scale);
  }
}

}  // namespace gpu
}  // namespace streamsink
