// Dense layers on the CPU: y = x @ w^T + b with w stored (out, in) as in
// Hugging Face checkpoints.
//
// Our own blocked kernel rather than a BLAS, for one reason: every output
// element is a dot product computed in a fixed order (8 interleaved partial
// sums, reduced pairwise, then the tail) that does not depend on how many
// rows share the call. A session's numbers are therefore bitwise identical
// whether it is decoded alone, in a batch of 32, or prefilled in chunks of
// any size, which exact replay after a failover relies on. BLAS libraries pick
// kernels and blockings by matrix size, so they do not give that.
// Work is split over output features (static chunks), and within a chunk four
// rows are processed per pass so each weight row is loaded once per four rows.
#pragma once
#include <cstdint>

namespace streamsink {

class ThreadPool;

// x: (rows, in), w: (out, in), b: (out) or nullptr, y: (rows, out)
void linear(ThreadPool& pool, const float* x, int64_t rows, int64_t in, const float* w, const float* b,
            int64_t out, float* y);

// Single dot product with the same arithmetic as linear(); used by attention.
float dot(const float* a, const float* b, int64_t n);

}  // namespace streamsink
