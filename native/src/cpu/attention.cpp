#include "attention.h"

#include <cmath>
#include <cstring>

#include "../kv_cache.h"
#include "../model_config.h"
#include "../rope.h"
#include "linear.h"

namespace streamsink {

void attend_rows(const ModelConfig& cfg, const RopeTable* rope, const float* alibi_slopes, KvCache& cache,
                 int layer, int kv_head, int64_t first_token, int64_t rows, const float* qkv, float* out,
                 AttentionScratch& scratch) {
  const int hd = cfg.head_dim;
  const int group = cfg.heads / cfg.kv_heads;
  const int64_t qkv_dim = cfg.qkv_dim();
  const int64_t out_dim = int64_t(cfg.heads) * hd;
  const CacheShape& shape = cache.shape();
  const int64_t k_offset = int64_t(cfg.heads) * hd + int64_t(kv_head) * hd;
  const int64_t v_offset = int64_t(cfg.heads + cfg.kv_heads) * hd + int64_t(kv_head) * hd;

  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = first_token + r;
    const float* row = qkv + r * qkv_dim;
    const int64_t slot = shape.slot_of(t);
    const bool prerotated = rope && cache.prerotated();
    if (prerotated) rope->rotate(row + k_offset, t, hd, cache.key(layer, slot, kv_head));
    else std::memcpy(cache.key(layer, slot, kv_head), row + k_offset, sizeof(float) * hd);
    std::memcpy(cache.value(layer, slot, kv_head), row + v_offset, sizeof(float) * hd);

    const int64_t n = shape.visible(t);
    const int64_t q_pos = n - 1;
    scratch.scores.resize(size_t(n));
    if (rope && !prerotated) {
      scratch.rotated_keys.resize(size_t(n * hd));
      for (int64_t i = 0; i < n; ++i)
        rope->rotate(cache.key(layer, shape.entry_slot(t, i), kv_head), i, hd, &scratch.rotated_keys[size_t(i * hd)]);
    }
    scratch.query.resize(size_t(hd));

    for (int g = 0; g < group; ++g) {
      const int h = kv_head * group + g;
      const float* q = row + int64_t(h) * hd;
      if (rope) {
        rope->rotate(q, q_pos, hd, scratch.query.data());
        q = scratch.query.data();
      }
      float max_score = -INFINITY;
      for (int64_t i = 0; i < n; ++i) {
        const float* k = rope && !prerotated ? &scratch.rotated_keys[size_t(i * hd)] : cache.key(layer, shape.entry_slot(t, i), kv_head);
        float s = dot(q, k, hd) * cfg.softmax_scale;
        if (alibi_slopes) s += -float(q_pos - i) * alibi_slopes[h];
        scratch.scores[size_t(i)] = s;
        if (s > max_score) max_score = s;
      }
      double denom = 0;
      for (int64_t i = 0; i < n; ++i) {
        float p = std::exp(scratch.scores[size_t(i)] - max_score);
        scratch.scores[size_t(i)] = p;
        denom += p;
      }
      float* o = out + r * out_dim + int64_t(h) * hd;
      for (int d = 0; d < hd; ++d) o[d] = 0.0f;
      for (int64_t i = 0; i < n; ++i) {
        const float* v = cache.value(layer, shape.entry_slot(t, i), kv_head);
        const float p = scratch.scores[size_t(i)];
        for (int d = 0; d < hd; ++d) o[d] += p * v[d];
      }
      const float inv = float(1.0 / denom);
      for (int d = 0; d < hd; ++d) o[d] *= inv;
    }
  }
}

}  // namespace streamsink
