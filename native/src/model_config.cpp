#include "model_config.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "errors.h"
#include "json.h"

namespace streamsink {

namespace {

class ConfigReader {
 public:
  ConfigReader(const JsonValue& root, const std::string& what) : root_(root), what_(what) {}

  const JsonValue* find(std::initializer_list<const char*> keys) const {
    for (const char* k : keys) {
      const JsonValue* v = lookup(k);
      if (v && !v->is_null()) return v;
    }
    return nullptr;
  }

  int integer(std::initializer_list<const char*> keys, int fallback, bool required) const {
    const JsonValue* v = find(keys);
    if (!v) {
      if (required) fail_missing(keys);
      return fallback;
    }
    if (!v->is_number() || !v->is_integer || v->integer <= 0 || v->integer > (1 << 30))
      throw EngineError(ErrorCode::ModelConfig, what_ + ": \"" + *keys.begin() + "\" must be a positive integer");
    return int(v->integer);
  }

  double number(std::initializer_list<const char*> keys, double fallback) const {
    const JsonValue* v = find(keys);
    if (!v) return fallback;
    if (!v->is_number() || !std::isfinite(v->number))
      throw EngineError(ErrorCode::ModelConfig, what_ + ": \"" + *keys.begin() + "\" must be a number");
    return v->number;
  }

  bool boolean(std::initializer_list<const char*> keys, bool fallback) const {
    const JsonValue* v = find(keys);
    if (!v) return fallback;
    if (!v->is_bool()) throw EngineError(ErrorCode::ModelConfig, what_ + ": \"" + *keys.begin() + "\" must be true or false");
    return v->boolean;
  }

  std::string string(std::initializer_list<const char*> keys, const std::string& fallback) const {
    const JsonValue* v = find(keys);
    if (!v) return fallback;
    if (!v->is_string()) throw EngineError(ErrorCode::ModelConfig, what_ + ": \"" + *keys.begin() + "\" must be a string");
    return v->string;
  }

 private:
  // "a.b" looks into nested objects.
  const JsonValue* lookup(const std::string& key) const {
    const JsonValue* cur = &root_;
    size_t start = 0;
    for (;;) {
      size_t dot = key.find('.', start);
      std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      cur = cur->get(part);
      if (!cur || dot == std::string::npos) return cur;
      start = dot + 1;
    }
  }

  [[noreturn]] void fail_missing(std::initializer_list<const char*> keys) const {
    throw EngineError(ErrorCode::ModelConfig, what_ + ": missing \"" + std::string(*keys.begin()) + "\"");
  }

  const JsonValue& root_;
  std::string what_;
};

void check_rope_scaling(const ConfigReader& r, const std::string& what) {
  const JsonValue* scaling = r.find({"rope_scaling"});
  std::string type = r.string({"rope_parameters.rope_type", "rope_scaling.rope_type", "rope_scaling.type"}, "default");
  if ((scaling && scaling->is_object() && type != "default") || type != "default")
    throw EngineError(ErrorCode::UnsupportedModel, what + ": rope scaling type \"" + type + "\" is not supported");
}

}  // namespace

const char* architecture_name(Architecture a) {
  switch (a) {
    case Architecture::Llama: return "LlamaForCausalLM";
    case Architecture::GPTNeoX: return "GPTNeoXForCausalLM";
    case Architecture::Falcon: return "FalconForCausalLM";
    case Architecture::Mpt: return "MptForCausalLM";
  }
  return "?";
}

ModelConfig parse_model_config(const std::string& text, const std::string& what) {
  JsonValue root;
  try {
    root = parse_json(text, what);
  } catch (const std::invalid_argument& e) {
    throw EngineError(ErrorCode::ModelConfig, std::string("bad JSON in ") + e.what());
  }
  if (!root.is_object()) throw EngineError(ErrorCode::ModelConfig, what + ": not a JSON object");
  ConfigReader r(root, what);
  ModelConfig c;

  const JsonValue* archs = root.get("architectures");
  if (archs && archs->is_array() && !archs->array.empty() && archs->array[0].is_string()) {
    c.architecture_name = archs->array[0].string;
  } else {
    std::string mt = r.string({"model_type"}, "");
    if (mt == "llama") c.architecture_name = "LlamaForCausalLM";
    else if (mt == "gpt_neox") c.architecture_name = "GPTNeoXForCausalLM";
    else if (mt == "falcon") c.architecture_name = "FalconForCausalLM";
    else if (mt == "mpt") c.architecture_name = "MptForCausalLM";
    else throw EngineError(ErrorCode::ModelConfig, what + ": no \"architectures\" or known \"model_type\"");
  }

  const std::string& name = c.architecture_name;
  c.sink_token_id = -1;
  if (const JsonValue* st = r.find({"streamsink.sink_token_id"})) {
    if (!st->is_integer || st->integer < 0) throw EngineError(ErrorCode::ModelConfig, what + ": streamsink.sink_token_id must be a non-negative integer");
    // Range-checked before narrowing to int: 2^32 would otherwise become token 0.
    if (st->integer > (int64_t(1) << 30)) throw EngineError(ErrorCode::ModelConfig, what + ": streamsink.sink_token_id is outside the vocabulary");
    c.sink_token_id = int(st->integer);
  }

  if (name == "LlamaForCausalLM" || name == "MistralForCausalLM") {
    c.arch = Architecture::Llama;
    c.hidden = r.integer({"hidden_size"}, 0, true);
    c.layers = r.integer({"num_hidden_layers"}, 0, true);
    c.heads = r.integer({"num_attention_heads"}, 0, true);
    c.kv_heads = r.integer({"num_key_value_heads"}, c.heads, false);
    c.head_dim = r.integer({"head_dim"}, c.hidden / c.heads, false);
    c.intermediate = r.integer({"intermediate_size"}, 0, true);
    c.vocab_size = r.integer({"vocab_size"}, 0, true);
    c.max_positions = r.integer({"max_position_embeddings"}, 4096, false);
    c.norm = NormKind::RMSNorm;
    c.norm_eps = float(r.number({"rms_norm_eps"}, 1e-6));
    c.rope_theta = r.number({"rope_parameters.rope_theta", "rope_theta"}, 10000.0);
    c.rotary_dim = c.head_dim;
    check_rope_scaling(r, what);
    std::string act = r.string({"hidden_act"}, "silu");
    if (act != "silu") throw EngineError(ErrorCode::UnsupportedModel, what + ": hidden_act \"" + act + "\" is not supported for Llama (silu)");
    c.activation = Activation::SwiGLU;
    c.qkv_layout = QkvLayout::Separate;
    c.qkv_bias = c.out_bias = r.boolean({"attention_bias"}, false);
    c.mlp_bias = r.boolean({"mlp_bias"}, false);
    c.tied_embeddings = r.boolean({"tie_word_embeddings"}, false);
    if (r.find({"sliding_window"})) throw EngineError(ErrorCode::UnsupportedModel, what + ": native sliding_window attention is not supported");
  } else if (name == "GPTNeoXForCausalLM") {
    c.arch = Architecture::GPTNeoX;
    c.hidden = r.integer({"hidden_size"}, 0, true);
    c.layers = r.integer({"num_hidden_layers"}, 0, true);
    c.heads = r.integer({"num_attention_heads"}, 0, true);
    c.kv_heads = c.heads;
    c.head_dim = c.hidden / c.heads;
    c.intermediate = r.integer({"intermediate_size"}, 0, true);
    c.vocab_size = r.integer({"vocab_size"}, 0, true);
    c.max_positions = r.integer({"max_position_embeddings"}, 2048, false);
    c.norm = NormKind::LayerNorm;
    c.norm_bias = true;
    c.norm_eps = float(r.number({"layer_norm_eps"}, 1e-5));
    double pct = r.number({"rope_parameters.partial_rotary_factor", "partial_rotary_factor", "rotary_pct"}, 0.25);
    c.rotary_dim = int(c.head_dim * pct);
    c.rope_theta = r.number({"rope_parameters.rope_theta", "rope_theta", "rotary_emb_base"}, 10000.0);
    check_rope_scaling(r, what);
    std::string act = r.string({"hidden_act"}, "gelu");
    if (act != "gelu") throw EngineError(ErrorCode::UnsupportedModel, what + ": hidden_act \"" + act + "\" is not supported for GPT-NeoX (gelu)");
    c.activation = Activation::Gelu;
    c.parallel_residual = r.boolean({"use_parallel_residual"}, true);
    c.mlp_norm_separate = true;
    c.qkv_layout = QkvLayout::HeadInterleaved;
    c.qkv_bias = c.out_bias = r.boolean({"attention_bias"}, true);
    c.mlp_bias = true;
    c.tied_embeddings = r.boolean({"tie_word_embeddings"}, false);
  } else if (name == "FalconForCausalLM" || name == "RWForCausalLM") {
    c.arch = Architecture::Falcon;
    c.hidden = r.integer({"hidden_size"}, 0, true);
    c.layers = r.integer({"num_hidden_layers", "n_layer"}, 0, true);
    c.heads = r.integer({"num_attention_heads", "n_head"}, 0, true);
    c.head_dim = c.hidden / c.heads;
    c.vocab_size = r.integer({"vocab_size"}, 0, true);
    c.intermediate = r.integer({"ffn_hidden_size"}, 4 * c.hidden, false);
    c.max_positions = r.integer({"max_position_embeddings"}, 2048, false);
    if (r.boolean({"alibi"}, false)) throw EngineError(ErrorCode::UnsupportedModel, what + ": Falcon with alibi=true is not supported");
    bool new_arch = r.boolean({"new_decoder_architecture"}, false);
    bool multi_query = r.boolean({"multi_query"}, true);
    if (new_arch) {
      c.kv_heads = r.integer({"num_kv_heads", "n_head_kv"}, c.heads, false);
      c.qkv_layout = QkvLayout::Grouped;
      c.parallel_residual = true;
      int lns = r.integer({"num_ln_in_parallel_attn"}, 2, false);
      c.mlp_norm_separate = lns == 2;
    } else {
      c.kv_heads = multi_query ? 1 : c.heads;
      c.qkv_layout = multi_query ? QkvLayout::Concatenated : QkvLayout::HeadInterleaved;
      c.parallel_residual = r.boolean({"parallel_attn"}, true);
      c.mlp_norm_separate = !c.parallel_residual;
    }
    c.norm = NormKind::LayerNorm;
    c.norm_bias = true;
    c.norm_eps = float(r.number({"layer_norm_epsilon"}, 1e-5));
    c.rope_theta = r.number({"rope_parameters.rope_theta", "rope_theta"}, 10000.0);
    c.rotary_dim = c.head_dim;
    check_rope_scaling(r, what);
    std::string act = r.string({"activation"}, "gelu");
    if (act != "gelu") throw EngineError(ErrorCode::UnsupportedModel, what + ": activation \"" + act + "\" is not supported for Falcon (gelu)");
    c.activation = Activation::Gelu;
    bool bias = r.boolean({"bias"}, false);
    c.qkv_bias = c.out_bias = c.mlp_bias = bias;
    c.tied_embeddings = r.boolean({"tie_word_embeddings"}, true);
  } else if (name == "MptForCausalLM") {
    c.arch = Architecture::Mpt;
    c.hidden = r.integer({"d_model"}, 0, true);
    c.layers = r.integer({"n_layers"}, 0, true);
    c.heads = r.integer({"n_heads"}, 0, true);
    c.kv_heads = c.heads;
    c.head_dim = c.hidden / c.heads;
    c.intermediate = c.hidden * r.integer({"expansion_ratio"}, 4, false);
    c.vocab_size = r.integer({"vocab_size"}, 0, true);
    c.max_positions = r.integer({"max_seq_len"}, 2048, false);
    if (!r.boolean({"attn_config.alibi"}, true)) throw EngineError(ErrorCode::UnsupportedModel, what + ": MPT without ALiBi is not supported");
    if (r.boolean({"attn_config.qk_ln"}, false)) throw EngineError(ErrorCode::UnsupportedModel, what + ": MPT with qk_ln is not supported");
    c.position = PositionKind::Alibi;
    c.alibi_bias_max = r.number({"attn_config.alibi_bias_max"}, 8.0);
    c.clip_qkv = float(r.number({"attn_config.clip_qkv"}, 0.0));
    c.softmax_scale = float(r.number({"attn_config.softmax_scale"}, 0.0));
    c.norm = NormKind::LayerNorm;
    c.norm_bias = false;
    c.norm_eps = float(r.number({"layer_norm_epsilon"}, 1e-5));
    c.activation = Activation::Gelu;
    c.qkv_layout = QkvLayout::Concatenated;
    bool no_bias = r.boolean({"no_bias"}, true);
    if (!no_bias) throw EngineError(ErrorCode::UnsupportedModel, what + ": MPT with linear biases (no_bias=false) is not supported");
    c.tied_embeddings = true;
  } else {
    throw EngineError(ErrorCode::UnsupportedModel,
                      what + ": unsupported architecture \"" + name +
                          "\" (supported: LlamaForCausalLM, GPTNeoXForCausalLM, FalconForCausalLM, MptForCausalLM)");
  }

  if (c.hidden % c.heads != 0 && c.arch != Architecture::Llama)
    throw EngineError(ErrorCode::ModelConfig, what + ": hidden size is not a multiple of the head count");
  if (c.heads % c.kv_heads != 0) throw EngineError(ErrorCode::ModelConfig, what + ": attention heads not a multiple of KV heads");
  if (c.position == PositionKind::Rotary && (c.rotary_dim % 2 != 0 || c.rotary_dim > c.head_dim || c.rotary_dim <= 0))
    throw EngineError(ErrorCode::ModelConfig, what + ": rotary dimension " + std::to_string(c.rotary_dim) + " is invalid for head size " + std::to_string(c.head_dim));
  if (c.position == PositionKind::Rotary && !(c.rope_theta > 1.0))
    throw EngineError(ErrorCode::ModelConfig, what + ": rope_theta must be greater than 1, got " + std::to_string(c.rope_theta));
  if (!(c.norm_eps > 0)) throw EngineError(ErrorCode::ModelConfig, what + ": norm epsilon must be positive");
  if (c.sink_token_id >= c.vocab_size) throw EngineError(ErrorCode::ModelConfig, what + ": streamsink.sink_token_id is outside the vocabulary");
  if (c.softmax_scale <= 0) c.softmax_scale = float(1.0 / std::sqrt(double(c.head_dim)));
  return c;
}

ModelConfig load_model_config(const std::string& model_dir) {
  std::string path = model_dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw EngineError(ErrorCode::ModelConfig, "cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_model_config(ss.str(), path);
}

}  // namespace streamsink
