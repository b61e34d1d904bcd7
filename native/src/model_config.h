// The architecture-neutral description of a decoder-only transformer that
// the forward pass runs, read from a Hugging Face config.json. Each seed
// family maps onto it:
//   Llama-2   RMSNorm, RoPE (full), GQA, SwiGLU, sequential residual
//   GPT-NeoX  LayerNorm, RoPE on rotary_pct of each head, parallel residual
//   Falcon    LayerNorm, RoPE, multi-query or grouped (new_decoder_architecture)
//   MPT       LayerNorm without bias, ALiBi, no linear biases
#pragma once
#include <cstdint>
#include <string>

namespace streamsink {

enum class Architecture { Llama, GPTNeoX, Falcon, Mpt };
enum class NormKind { RMSNorm, LayerNorm };
enum class Activation { SwiGLU, Gelu };
enum class PositionKind { Rotary, Alibi };
// How the fused query_key_value rows of a checkpoint are laid out.
enum class QkvLayout {
  Separate,        // q_proj, k_proj, v_proj tensors (Llama)
  HeadInterleaved, // per head [q | k | v] (GPT-NeoX, Falcon without multi-query)
  Concatenated,    // [all q | all k | all v] (MPT, Falcon multi-query)
  Grouped,         // per KV group [q heads of the group | k | v] (Falcon new_decoder_architecture)
};

struct ModelConfig {
  Architecture arch = Architecture::Llama;
  std::string architecture_name;  // as in config.json, e.g. "LlamaForCausalLM"
  int vocab_size = 0;
  int hidden = 0;
  int layers = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int intermediate = 0;
  int max_positions = 0;

  NormKind norm = NormKind::RMSNorm;
  float norm_eps = 1e-5f;
  bool norm_bias = false;

  PositionKind position = PositionKind::Rotary;
  int rotary_dim = 0;       // leading dims of each head that RoPE rotates
  double rope_theta = 10000.0;
  double alibi_bias_max = 8.0;

  Activation activation = Activation::SwiGLU;
  bool parallel_residual = false;
  bool mlp_norm_separate = true;  // parallel residual: MLP gets its own norm of x
  QkvLayout qkv_layout = QkvLayout::Separate;
  bool qkv_bias = false;
  bool out_bias = false;
  bool mlp_bias = false;
  bool tied_embeddings = false;
  float clip_qkv = 0.0f;  // 0 = none
  float softmax_scale = 0.0f;

  int sink_token_id = -1;  // learned sink token (config key streamsink.sink_token_id)

  int qkv_dim() const { return (heads + 2 * kv_heads) * head_dim; }
};

// Parses `<dir>/config.json`; throws EngineError(ModelConfig | UnsupportedModel).
ModelConfig load_model_config(const std::string& model_dir);
ModelConfig parse_model_config(const std::string& json_text, const std::string& what);

const char* architecture_name(Architecture a);

}  // namespace streamsink
