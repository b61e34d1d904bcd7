#include "norm.h"

#include <cmath>

namespace streamsink {

void rms_norm(const float* x, int64_t rows, int64_t dim, const float* w, float eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(xr[i]) * xr[i];
    float inv = float(1.0 / std::sqrt(ss / double(dim) + eps));
    float* yr = y + r * dim;
    for (int64_t i = 0; i < dim; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

void layer_norm(const float* x, int64_t rows, int64_t dim, const float* w, const float* b, float eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double mean = 0;
    for (int64_t i = 0; i < dim; ++i) mean += xr[i];
    mean /= double(dim);
    double var = 0;
    for (int64_t i = 0; i < dim; ++i) {
      double d = xr[i] - mean;
      var += d * d;
    }
    var /= double(dim);
    double inv = 1.0 / std::sqrt(var + eps);
    float* yr = y + r * dim;
    for (int64_t i = 0; i < dim; ++i) {
      float v = float((xr[i] - mean) * inv) * w[i];
      yr[i] = b ? v + b[i] : v;
    }
  }
}

}  // namespace streamsink
