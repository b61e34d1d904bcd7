#include "rope.h"

#include <cmath>

namespace streamsink {

RopeTable::RopeTable(int rotary_dim, double theta) : rotary_dim_(rotary_dim) {
  for (int i = 0; i < rotary_dim / 2; ++i) {
    float exponent = float(2 * i) / float(rotary_dim);
    inv_freq_.push_back(float(1.0 / std::pow(theta, double(exponent))));
  }
}

void RopeTable::reserve(int64_t n) {
  if (n <= positions_) return;
  int64_t grow = std::max<int64_t>(n, positions_ * 2);
  const int half = rotary_dim_ / 2;
  cos_.resize(size_t(grow * half));
  sin_.resize(size_t(grow * half));
  for (int64_t p = positions_; p < grow; ++p)
    for (int i = 0; i < half; ++i) {
      float angle = float(p) * inv_freq_[i];
      cos_[size_t(p * half + i)] = float(std::cos(double(angle)));
      sin_[size_t(p * half + i)] = float(std::sin(double(angle)));
    }
  positions_ = grow;
}

std::vector<float> alibi_slopes(int heads, double bias_max) {
  int n = 1;
  while (n < heads) n *= 2;
  std::vector<double> base(n);
  for (int k = 1; k <= n; ++k) base[k - 1] = 1.0 / std::pow(2.0, float(k) * float(bias_max / n));
  std::vector<float> slopes;
  if (n == heads) {
    for (double b : base) slopes.push_back(float(b));
  } else {
    for (int i = 1; i < n; i += 2) slopes.push_back(float(base[i]));
    for (int i = 0; i < n; i += 2) slopes.push_back(float(base[i]));
    slopes.resize(heads);
  }
  return slopes;
}

}  // namespace streamsink
