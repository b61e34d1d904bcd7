#include "linear.h"

#include <algorithm>

#include "thread_pool.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SS_HAVE_AVX2 1
#endif

namespace streamsink {

namespace {

constexpr int64_t kRowBlock = 4;
constexpr int64_t kOutChunk = 16;

inline float reduce8(const float* l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

// R rows of x against one weight row; out[r] = dot(x_r, w).
template <int R>
inline void dot_rows(const float* const* xs, const float* w, int64_t n, float* out) {
  int64_t k = 0;
  float lanes[R][8];
#if SS_HAVE_AVX2
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (; k + 8 <= n; k += 8) {
    __m256 wv = _mm256_loadu_ps(w + k);
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(xs[r] + k), wv, acc[r]);
  }
  for (int r = 0; r < R; ++r) _mm256_storeu_ps(lanes[r], acc[r]);
#else
  for (int r = 0; r < R; ++r)
    for (int l = 0; l < 8; ++l) lanes[r][l] = 0.0f;
  for (; k + 8 <= n; k += 8)
    for (int r = 0; r < R; ++r)
      for (int l = 0; l < 8; ++l) lanes[r][l] += xs[r][k + l] * w[k + l];
#endif
  for (int r = 0; r < R; ++r) {
    float s = reduce8(lanes[r]);
    for (int64_t j = k; j < n; ++j) s += xs[r][j] * w[j];
    out[r] = s;
  }
}

}  // namespace

float dot(const float* a, const float* b, int64_t n) {
  float out;
  dot_rows<1>(&a, b, n, &out);
  return out;
}

void linear(ThreadPool& pool, const float* x, int64_t rows, int64_t in, const float* w, const float* b,
            int64_t out, float* y) {
  int64_t chunks = (out + kOutChunk - 1) / kOutChunk;
  pool.parallel_for(chunks, [&](int64_t c0, int64_t c1) {
    int64_t o_begin = c0 * kOutChunk, o_end = std::min(out, c1 * kOutChunk);
    for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
      int64_t nr = std::min(kRowBlock, rows - r0);
      const float* xs[kRowBlock];
      for (int64_t r = 0; r < nr; ++r) xs[r] = x + (r0 + r) * in;
      for (int64_t o = o_begin; o < o_end; ++o) {
        const float* wr = w + o * in;
        float res[kRowBlock];
        switch (nr) {
          case 4: dot_rows<4>(xs, wr, in, res); break;
          case 3: dot_rows<3>(xs, wr, in, res); break;
          case 2: dot_rows<2>(xs, wr, in, res); break;
          default: dot_rows<1>(xs, wr, in, res); break;
        }
        float bias = b ? b[o] : 0.0f;
        for (int64_t r = 0; r < nr; ++r) y[(r0 + r) * out + o] = res[r] + bias;
      }
    }
  });
}

}  // namespace streamsink
