// gemm_rows_check: gpu::gemm_rows (the 9..64-row tensor-core GEMM) against a
// CPU reference in double, for 1..4 tiles of 16 rows, with and without the
// SwiGLU epilogue, partial last tiles, rows past the matrix, and stream-K
// grids from one block (every row block written straight from registers) to
// one block per unit (every row block summed from partial tiles). Exit 0 when
// all pass. Run on the GPU host: tools/cuda/device-check.sh gemm.
#include "cuda/kernels.cuh"
#include <cstdio>
#include <vector>
#include <cmath>
#include <random>
#include <algorithm>
using namespace streamsink::gpu;
using T = __nv_bfloat16;
template <int MT, bool GLU>
float run(int R, int in, int out, int blocks) {
  std::mt19937 g(1); std::normal_distribution<float> nd;
  std::vector<T> W(size_t(out) * in), X(size_t(R) * in);
  std::vector<float> Wf(W.size()), Xf(X.size());
  for (size_t i = 0; i < W.size(); ++i) { W[i] = __float2bfloat16(nd(g) * 0.05f); Wf[i] = __bfloat162float(W[i]); }
  for (size_t i = 0; i < X.size(); ++i) { X[i] = __float2bfloat16(nd(g)); Xf[i] = __bfloat162float(X[i]); }
  T *dW, *dX, *dA; float *dY, *ws; unsigned* cnt;
  cudaMalloc(&dW, W.size() * 2); cudaMalloc(&dX, X.size() * 2);
  cudaMalloc(&dY, size_t(R) * out * 4); cudaMalloc(&dA, size_t(R) * out * 2);
  int rbk = GLU ? (out / 2 + 63) / 64 : (out + 127) / 128;
  blocks = std::min(blocks, rbk * (in / kRowsStage));  // the engine's rule: every block owns a unit
  cudaMalloc(&ws, size_t(blocks + rbk) * 16 * MT * 128 * 4); cudaMalloc(&cnt, rbk * 4); cudaMemset(cnt, 0, rbk * 4);
  cudaMemcpy(dW, W.data(), W.size() * 2, cudaMemcpyHostToDevice); cudaMemcpy(dX, X.data(), X.size() * 2, cudaMemcpyHostToDevice);
  GemmRowsArgs<T> a{}; a.W = dW; a.X = dX; a.in = in; a.out = out; a.R = R; a.row_blocks = rbk; a.Y = dY; a.act = dA; a.ws = ws; a.counters = cnt;
  gemm_rows<T, MT, GLU><<<blocks, 256>>>(a);
  cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) { printf("error %s\n", cudaGetErrorString(e)); return 1e9; }
  float err = 0;
  if (GLU) {
    std::vector<T> A(size_t(R) * out / 2); cudaMemcpy(A.data(), dA, A.size() * 2, cudaMemcpyDeviceToHost);
    for (int r = 0; r < R; ++r) for (int u = 0; u < out / 2; ++u) {
      double gg = 0, uu = 0;
      for (int k = 0; k < in; ++k) { gg += Xf[size_t(r) * in + k] * Wf[size_t(u) * in + k]; uu += Xf[size_t(r) * in + k] * Wf[size_t(out / 2 + u) * in + k]; }
      double ref = gg / (1 + std::exp(-gg)) * uu;
      err = std::fmax(err, std::fabs(ref - __bfloat162float(A[size_t(r) * out / 2 + u])) / (1 + std::fabs(ref)));
    }
  } else {
    std::vector<float> Y(size_t(R) * out); cudaMemcpy(Y.data(), dY, Y.size() * 4, cudaMemcpyDeviceToHost);
    for (int r = 0; r < R; ++r) for (int o = 0; o < out; ++o) {
      double s = 0; for (int k = 0; k < in; ++k) s += Xf[size_t(r) * in + k] * Wf[size_t(o) * in + k];
      err = std::fmax(err, std::fabs(s - Y[size_t(r) * out + o]));
    }
  }
  cudaFree(dW); cudaFree(dX); cudaFree(dY); cudaFree(dA); cudaFree(ws); cudaFree(cnt);
  return err;
}
int main() {
  int bad = 0;
  for (int blocks : {1, 3, 7, 1000}) {
    float e1 = run<1, false>(9, 512, 384, blocks), e2 = run<2, false>(32, 1024, 256, blocks), e3 = run<3, false>(40, 256, 200, blocks);
    float e4 = run<4, false>(64, 384, 130, blocks), g1 = run<1, true>(16, 512, 256, blocks), g2 = run<2, true>(20, 256, 300, blocks);
    printf("grid %d: mt1 %.2e mt2 %.2e mt3 %.2e mt4 %.2e glu1 %.2e glu2 %.2e\n", blocks, e1, e2, e3, e4, g1, g2);
    for (float e : {e1, e2, e3, e4, g1, g2}) bad += !(e < 1e-2);
  }
  printf("%s\n", bad ? "FAIL" : "PASS");
  return bad != 0;
}
