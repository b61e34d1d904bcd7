// Rotary position embedding tables and rotation, in the "rotate half"
// convention Hugging Face uses for Llama, GPT-NeoX and Falcon: for the first
// rotary_dim dims of a head, pairs (i, i + rotary_dim/2) are rotated by angle
// pos * theta^(-2i/rotary_dim); the remaining dims pass through (GPT-NeoX's
// partial rotary). Angles are formed as HF does (fp32 inverse frequency times
// fp32 position) so that parity with the reference holds to ~1e-7.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace streamsink {

class RopeTable {
 public:
  RopeTable(int rotary_dim, double theta);
  // Ensure positions [0, n) are tabulated. Not thread-safe: call before a step.
  void reserve(int64_t n);
  int rotary_dim() const { return rotary_dim_; }
  int64_t positions() const { return positions_; }
  // Tabulated cos/sin for positions [0, positions()), (positions, rotary_dim / 2) each.
  const float* cos_table() const { return cos_.data(); }
  const float* sin_table() const { return sin_.data(); }
  // out[0..head_dim) = rotate(x, pos); x and out may alias.
  void rotate(const float* x, int64_t pos, int head_dim, float* out) const {
    const int half = rotary_dim_ / 2;
    const float* c = &cos_[size_t(pos) * half];
    const float* s = &sin_[size_t(pos) * half];
    for (int i = 0; i < half; ++i) {
      float a = x[i], b = x[i + half];
      out[i] = a * c[i] - b * s[i];
      out[i + half] = b * c[i] + a * s[i];
    }
    if (out != x)
      for (int i = rotary_dim_; i < head_dim; ++i) out[i] = x[i];
  }

 private:
  int rotary_dim_;
  std::vector<float> inv_freq_;
  std::vector<float> cos_, sin_;  // (positions, rotary_dim / 2)
  int64_t positions_ = 0;
};

// ALiBi slopes as MPT defines them: for the next power of two n >= heads,
// slope_k = 2^(-k * bias_max / n), k = 1..n; when heads is not a power of two,
// the odd-indexed slopes come first, then the even ones, truncated to heads.
std::vector<float> alibi_slopes(int heads, double bias_max);

}  // namespace streamsink
