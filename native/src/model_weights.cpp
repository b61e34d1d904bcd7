// Loading a checkpoint into the canonical layout of model.h: tensor names
// per architecture, fused-QKV de-interleaving, and shape checks that name the
// offending tensor.
#include <cstring>

#include "errors.h"
#include "model.h"
#include "safetensors.h"

namespace streamsink {

namespace {

struct Names {
  std::string embed, final_norm, lm_head;
  std::string layer_prefix;  // e.g. "model.layers."
};

Names names_for(Architecture a) {
  switch (a) {
    case Architecture::Llama: return {"model.embed_tokens.weight", "model.norm", "lm_head.weight", "model.layers."};
    case Architecture::GPTNeoX: return {"gpt_neox.embed_in.weight", "gpt_neox.final_layer_norm", "embed_out.weight", "gpt_neox.layers."};
    case Architecture::Falcon: return {"transformer.word_embeddings.weight", "transformer.ln_f", "lm_head.weight", "transformer.h."};
    case Architecture::Mpt: return {"transformer.wte.weight", "transformer.norm_f", "lm_head.weight", "transformer.blocks."};
  }
  return {};
}

// Row r of the canonical [q | k | v] matrix comes from checkpoint row map(r).
std::vector<float> reorder_rows(const std::vector<float>& src, int64_t row_len, const ModelConfig& c) {
  const int64_t hd = c.head_dim, q_heads = c.heads, kv = c.kv_heads;
  std::vector<float> dst(src.size());
  auto copy_row = [&](int64_t dst_row, int64_t src_row) {
    std::memcpy(&dst[size_t(dst_row * row_len)], &src[size_t(src_row * row_len)], sizeof(float) * size_t(row_len));
  };
  for (int64_t d = 0; d < hd; ++d) {
    for (int64_t h = 0; h < q_heads; ++h) {
      int64_t src_row = 0;
      if (c.qkv_layout == QkvLayout::HeadInterleaved) src_row = (h * 3 + 0) * hd + d;
      else if (c.qkv_layout == QkvLayout::Grouped) {
        int64_t per = q_heads / kv;
        src_row = ((h / per) * (per + 2) + (h % per)) * hd + d;
      } else src_row = h * hd + d;
      copy_row(h * hd + d, src_row);
    }
    for (int64_t g = 0; g < kv; ++g) {
      int64_t k_src = 0, v_src = 0;
      if (c.qkv_layout == QkvLayout::HeadInterleaved) {
        k_src = (g * 3 + 1) * hd + d;
        v_src = (g * 3 + 2) * hd + d;
      } else if (c.qkv_layout == QkvLayout::Grouped) {
        int64_t per = q_heads / kv;
        k_src = (g * (per + 2) + per) * hd + d;
        v_src = (g * (per + 2) + per + 1) * hd + d;
      } else {
        k_src = (q_heads + g) * hd + d;
        v_src = (q_heads + kv + g) * hd + d;
      }
      copy_row((q_heads + g) * hd + d, k_src);
      copy_row((q_heads + kv + g) * hd + d, v_src);
    }
  }
  return dst;
}

}  // namespace

void Model::load_weights(const TensorStore& store) {
  const ModelConfig& c = config_;
  const Names n = names_for(c.arch);
  const int64_t H = c.hidden, V = c.vocab_size, I = c.intermediate, hd = c.head_dim;
  const int64_t qdim = int64_t(c.heads) * hd, kvdim = int64_t(c.kv_heads) * hd;
  auto load = [&](const std::string& name, std::vector<int64_t> shape) {
    std::vector<float> t = store.load_f32(name, shape);
    params_ += int64_t(t.size());
    return t;
  };

  embed_ = load(n.embed, {V, H});
  fp16_ = store.get(n.embed).dtype == DType::F16;
  if (store.has(n.lm_head)) {
    lm_head_ = load(n.lm_head, {V, H});
  } else if (!c.tied_embeddings) {
    throw EngineError(ErrorCode::MissingTensor, "missing tensor " + n.lm_head + " (the config does not tie embeddings)");
  }
  final_w_ = load(n.final_norm + ".weight", {H});
  if (c.norm_bias) final_b_ = load(n.final_norm + ".bias", {H});

  layers_.resize(size_t(c.layers));
  for (int l = 0; l < c.layers; ++l) {
    LayerWeights& w = layers_[size_t(l)];
    const std::string p = n.layer_prefix + std::to_string(l) + ".";
    auto norm_pair = [&](const std::string& base, std::vector<float>& weight, std::vector<float>& bias) {
      weight = load(p + base + ".weight", {H});
      if (c.norm_bias) bias = load(p + base + ".bias", {H});
    };
    switch (c.arch) {
      case Architecture::Llama: {
        norm_pair("input_layernorm", w.norm1_w, w.norm1_b);
        norm_pair("post_attention_layernorm", w.norm2_w, w.norm2_b);
        std::vector<float> q = load(p + "self_attn.q_proj.weight", {qdim, H});
        std::vector<float> k = load(p + "self_attn.k_proj.weight", {kvdim, H});
        std::vector<float> v = load(p + "self_attn.v_proj.weight", {kvdim, H});
        w.wqkv = q;
        w.wqkv.insert(w.wqkv.end(), k.begin(), k.end());
        w.wqkv.insert(w.wqkv.end(), v.begin(), v.end());
        if (c.qkv_bias) {
          w.bqkv = load(p + "self_attn.q_proj.bias", {qdim});
          std::vector<float> kb = load(p + "self_attn.k_proj.bias", {kvdim});
          std::vector<float> vb = load(p + "self_attn.v_proj.bias", {kvdim});
          w.bqkv.insert(w.bqkv.end(), kb.begin(), kb.end());
          w.bqkv.insert(w.bqkv.end(), vb.begin(), vb.end());
          w.bo = load(p + "self_attn.o_proj.bias", {H});
        }
        w.wo = load(p + "self_attn.o_proj.weight", {H, qdim});
        w.w_up = load(p + "mlp.gate_proj.weight", {I, H});
        std::vector<float> up = load(p + "mlp.up_proj.weight", {I, H});
        w.w_up.insert(w.w_up.end(), up.begin(), up.end());
        w.w_down = load(p + "mlp.down_proj.weight", {H, I});
        if (c.mlp_bias) {
          w.b_up = load(p + "mlp.gate_proj.bias", {I});
          std::vector<float> ub = load(p + "mlp.up_proj.bias", {I});
          w.b_up.insert(w.b_up.end(), ub.begin(), ub.end());
          w.b_down = load(p + "mlp.down_proj.bias", {H});
        }
        break;
      }
      case Architecture::GPTNeoX: {
        norm_pair("input_layernorm", w.norm1_w, w.norm1_b);
        norm_pair("post_attention_layernorm", w.norm2_w, w.norm2_b);
        w.wqkv = reorder_rows(load(p + "attention.query_key_value.weight", {3 * H, H}), H, c);
        if (c.qkv_bias) {
          w.bqkv = reorder_rows(load(p + "attention.query_key_value.bias", {3 * H}), 1, c);
          w.bo = load(p + "attention.dense.bias", {H});
        }
        w.wo = load(p + "attention.dense.weight", {H, H});
        w.w_up = load(p + "mlp.dense_h_to_4h.weight", {I, H});
        w.b_up = load(p + "mlp.dense_h_to_4h.bias", {I});
        w.w_down = load(p + "mlp.dense_4h_to_h.weight", {H, I});
        w.b_down = load(p + "mlp.dense_4h_to_h.bias", {H});
        break;
      }
      case Architecture::Falcon: {
        const bool new_arch = c.qkv_layout == QkvLayout::Grouped;
        if (new_arch && c.mlp_norm_separate) {
          norm_pair("ln_attn", w.norm1_w, w.norm1_b);
          norm_pair("ln_mlp", w.norm2_w, w.norm2_b);
        } else {
          norm_pair("input_layernorm", w.norm1_w, w.norm1_b);
          if (!c.parallel_residual) norm_pair("post_attention_layernorm", w.norm2_w, w.norm2_b);
        }
        const int64_t rows = int64_t(c.qkv_dim());
        w.wqkv = reorder_rows(load(p + "self_attention.query_key_value.weight", {rows, H}), H, c);
        w.wo = load(p + "self_attention.dense.weight", {H, qdim});
        w.w_up = load(p + "mlp.dense_h_to_4h.weight", {I, H});
        w.w_down = load(p + "mlp.dense_4h_to_h.weight", {H, I});
        if (c.qkv_bias) {
          w.bqkv = reorder_rows(load(p + "self_attention.query_key_value.bias", {rows}), 1, c);
          w.bo = load(p + "self_attention.dense.bias", {H});
          w.b_up = load(p + "mlp.dense_h_to_4h.bias", {I});
          w.b_down = load(p + "mlp.dense_4h_to_h.bias", {H});
        }
        break;
      }
      case Architecture::Mpt: {
        norm_pair("norm_1", w.norm1_w, w.norm1_b);
        norm_pair("norm_2", w.norm2_w, w.norm2_b);
        w.wqkv = load(p + "attn.Wqkv.weight", {3 * H, H});
        w.wo = load(p + "attn.out_proj.weight", {H, H});
        w.w_up = load(p + "ffn.up_proj.weight", {I, H});
        w.w_down = load(p + "ffn.down_proj.weight", {H, I});
        break;
      }
    }
  }
}

}  // namespace streamsink
