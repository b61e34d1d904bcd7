#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/activation.h"
#include "cpu/attention.h"
#include "cpu/linear.h"
#include "cpu/norm.h"
#include "errors.h"
#include "kv_cache.h"
#include "safetensors.h"

namespace streamsink {

namespace {

uint64_t fnv1a(uint64_t h, const std::string& s) {
  for (unsigned char ch : s) { h ^= ch; h *= 1099511628211ull; }
  return h;
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& model_dir, int threads) {
  std::unique_ptr<Model> m(new Model());
  m->config_ = load_model_config(model_dir);
  std::unique_ptr<TensorStore> store = TensorStore::open(model_dir);
  m->load_weights(*store);
  m->hash_ = fnv1a(store->header_hash(), m->config_.architecture_name);
  m->pool_ = std::make_unique<ThreadPool>(threads);
  const ModelConfig& c = m->config_;
  if (c.position == PositionKind::Rotary) {
    m->rope_ = std::make_unique<RopeTable>(c.rotary_dim, c.rope_theta);
    m->rope_->reserve(1024);
  } else {
    m->alibi_slopes_ = alibi_slopes(c.heads, c.alibi_bias_max);
  }
  return m;
}

void Model::release_host_weights() {
  std::vector<LayerWeights>().swap(layers_);
  std::vector<float>().swap(embed_);
  std::vector<float>().swap(lm_head_);
}

void Model::norm(const float* x, int64_t rows, const std::vector<float>& w, const std::vector<float>& b, float* y) const {
  if (config_.norm == NormKind::RMSNorm) rms_norm(x, rows, config_.hidden, w.data(), config_.norm_eps, y);
  else layer_norm(x, rows, config_.hidden, w.data(), b.empty() ? nullptr : b.data(), config_.norm_eps, y);
}

void Model::forward(std::vector<ForwardSequence>& seqs) {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden, V = c.vocab_size, I = c.intermediate;
  const int64_t qkv_dim = c.qkv_dim(), attn_dim = int64_t(c.heads) * c.head_dim;
  const int64_t up_dim = c.activation == Activation::SwiGLU ? 2 * I : I;

  std::vector<int64_t> offset(seqs.size() + 1, 0);
  int64_t max_position = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    ForwardSequence& q = seqs[s];
    offset[s + 1] = offset[s] + q.count;
    int64_t end = q.cache->tokens() + q.count;
    q.cache->reserve_tokens(end);
    max_position = std::max(max_position, q.cache->shape().visible(end - 1));
  }
  const int64_t rows = offset.back();
  if (rows == 0) return;
  if (rope_) rope_->reserve(max_position + 1);

  std::vector<float> x(size_t(rows * H)), h(size_t(rows * H)), h2, qkv(size_t(rows * qkv_dim)),
      attn(size_t(rows * attn_dim)), a(size_t(rows * H)), up(size_t(rows * up_dim)), act, m(size_t(rows * H));
  if (c.activation == Activation::SwiGLU) act.resize(size_t(rows * I));

  for (size_t s = 0; s < seqs.size(); ++s)
    for (int64_t i = 0; i < seqs[s].count; ++i)
      std::memcpy(&x[size_t((offset[s] + i) * H)], &embed_[size_t(int64_t(seqs[s].tokens[i]) * H)], sizeof(float) * size_t(H));

  // Attention work items: (sequence, kv head); each runs its rows in order.
  const int64_t tasks = int64_t(seqs.size()) * c.kv_heads;
  for (int l = 0; l < c.layers; ++l) {
    const LayerWeights& w = layers_[size_t(l)];
    norm(x.data(), rows, w.norm1_w, w.norm1_b, h.data());
    linear(*pool_, h.data(), rows, H, w.wqkv.data(), w.bqkv.empty() ? nullptr : w.bqkv.data(), qkv_dim, qkv.data());
    if (c.clip_qkv > 0)
      for (float& v : qkv) v = std::min(c.clip_qkv, std::max(-c.clip_qkv, v));

    pool_->parallel_for(tasks, [&](int64_t b, int64_t e) {
      AttentionScratch scratch;
      for (int64_t task = b; task < e; ++task) {
        size_t s = size_t(task / c.kv_heads);
        int kvh = int(task % c.kv_heads);
        ForwardSequence& q = seqs[s];
        attend_rows(c, rope_.get(), alibi_slopes_.empty() ? nullptr : alibi_slopes_.data(), *q.cache, l, kvh,
                    q.cache->tokens(), q.count, &qkv[size_t(offset[s] * qkv_dim)], &attn[size_t(offset[s] * attn_dim)],
                    scratch);
      }
    });
    linear(*pool_, attn.data(), rows, attn_dim, w.wo.data(), w.bo.empty() ? nullptr : w.bo.data(), H, a.data());

    const float* mlp_in;
    if (c.parallel_residual) {
      if (c.mlp_norm_separate) {
        h2.resize(size_t(rows * H));
        norm(x.data(), rows, w.norm2_w, w.norm2_b, h2.data());
        mlp_in = h2.data();
      } else {
        mlp_in = h.data();
      }
    } else {
      add_inplace(x.data(), a.data(), rows * H);
      norm(x.data(), rows, w.norm2_w, w.norm2_b, h.data());
      mlp_in = h.data();
    }
    linear(*pool_, mlp_in, rows, H, w.w_up.data(), w.b_up.empty() ? nullptr : w.b_up.data(), up_dim, up.data());
    const float* down_in;
    if (c.activation == Activation::SwiGLU) {
      swiglu(up.data(), rows, I, act.data());
      down_in = act.data();
    } else {
      gelu_inplace(up.data(), rows * I);
      down_in = up.data();
    }
    linear(*pool_, down_in, rows, I, w.w_down.data(), w.b_down.empty() ? nullptr : w.b_down.data(), H, m.data());
    if (c.parallel_residual) add_inplace(x.data(), a.data(), rows * H);
    add_inplace(x.data(), m.data(), rows * H);
  }

  for (ForwardSequence& q : seqs) q.cache->set_tokens(q.cache->tokens() + q.count);

  // Final norm and LM head only for the rows whose logits are wanted.
  std::vector<int64_t> out_rows;
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (seqs[s].count == 0) continue;
    if (seqs[s].all_logits)
      for (int64_t i = 0; i < seqs[s].count; ++i) out_rows.push_back(offset[s] + i);
    else
      out_rows.push_back(offset[s + 1] - 1);
  }
  const int64_t n_out = int64_t(out_rows.size());
  std::vector<float> gathered(size_t(n_out * H)), normed(size_t(n_out * H)), logits(size_t(n_out * V));
  for (int64_t i = 0; i < n_out; ++i)
    std::memcpy(&gathered[size_t(i * H)], &x[size_t(out_rows[size_t(i)] * H)], sizeof(float) * size_t(H));
  norm(gathered.data(), n_out, final_w_, final_b_, normed.data());
  const std::vector<float>& head = lm_head_.empty() ? embed_ : lm_head_;
  linear(*pool_, normed.data(), n_out, H, head.data(), nullptr, V, logits.data());
  int64_t cursor = 0;
  for (ForwardSequence& q : seqs) {
    if (q.count == 0) continue;
    int64_t n = q.all_logits ? q.count : 1;
    std::memcpy(q.logits, &logits[size_t(cursor * V)], sizeof(float) * size_t(n * V));
    cursor += n;
  }
}

}  // namespace streamsink
