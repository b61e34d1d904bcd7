// Row normalisations: RMSNorm (Llama) and LayerNorm with optional bias
// (GPT-NeoX, Falcon; MPT has none). Statistics are accumulated in double, so
// they match the fp32 reference to well under the parity tolerance.
#pragma once
#include <cstdint>

namespace streamsink {

// x, y: (rows, dim); w: (dim); b: (dim) or nullptr
void rms_norm(const float* x, int64_t rows, int64_t dim, const float* w, float eps, float* y);
void layer_norm(const float* x, int64_t rows, int64_t dim, const float* w, const float* b, float eps, float* y);

}  // namespace streamsink
