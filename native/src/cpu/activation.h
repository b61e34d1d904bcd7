// MLP activations: SwiGLU (Llama: silu(gate) * up) and exact-erf GELU
// (GPT-NeoX "gelu", Falcon and MPT nn.GELU()).
#pragma once
#include <cstdint>

namespace streamsink {

// gate_up: (rows, 2 * inter) holding [gate | up] per row; out: (rows, inter)
void swiglu(const float* gate_up, int64_t rows, int64_t inter, float* out);
// x: (n), in place
void gelu_inplace(float* x, int64_t n);

}  // namespace streamsink
