// Per-session key/value storage on the CPU. Keys are stored BEFORE RoPE so a
// key can be rotated to whatever in-cache position it holds when attended.
// Slot-major layout per layer so a dense cache grows by appending:
//   k, v: (layers) x (slots, kv_heads, head_dim)
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cache_policy.h"

namespace streamsink {

class KvCache {
 public:
  // `prerotated` stores keys already rotated at their slot index. Only valid
  // for a dense cache, where a key's position never changes: the recompute
  // baseline's scratch cache uses it so it is not charged for re-rotation.
  // `host` = false keeps no host arrays: the GPU backend holds the entries in
  // device memory (device()) and fills the host arrays only to export.
  KvCache(const CacheShape& shape, int layers, int kv_heads, int head_dim, bool prerotated = false, bool host = true);
  bool prerotated() const { return prerotated_; }
  bool host_storage() const { return host_; }
  // Allocates (true) or frees (false) the host arrays for slots_allocated() slots.
  void set_host_storage(bool on);
  // The GPU backend's device storage (opaque here).
  const std::shared_ptr<void>& device() const { return device_; }
  void set_device(std::shared_ptr<void> d) { device_ = std::move(d); }

  const CacheShape& shape() const { return shape_; }
  // Make room for tokens up to (excluding) `end`; dense caches grow, bounded
  // caches are allocated at full capacity up front.
  void reserve_tokens(int64_t end);
  int64_t slots_allocated() const { return slots_; }

  float* key(int layer, int64_t slot, int kv_head) { return &k_[layer][(slot * kv_heads_ + kv_head) * head_dim_]; }
  float* value(int layer, int64_t slot, int kv_head) { return &v_[layer][(slot * kv_heads_ + kv_head) * head_dim_]; }
  const float* key(int layer, int64_t slot, int kv_head) const { return &k_[layer][(slot * kv_heads_ + kv_head) * head_dim_]; }
  const float* value(int layer, int64_t slot, int kv_head) const { return &v_[layer][(slot * kv_heads_ + kv_head) * head_dim_]; }

  // Tokens written so far (the next token's index).
  int64_t tokens() const { return tokens_; }
  void set_tokens(int64_t t) { tokens_ = t; }
  // Slots holding live entries.
  int64_t filled() const { return tokens_ == 0 ? 0 : shape_.visible(tokens_ - 1); }

  int layers() const { return layers_; }
  int kv_heads() const { return kv_heads_; }
  int head_dim() const { return head_dim_; }
  int64_t slot_floats() const { return int64_t(kv_heads_) * head_dim_; }
  std::vector<float>& layer_keys(int layer) { return k_[layer]; }
  std::vector<float>& layer_values(int layer) { return v_[layer]; }

 private:
  CacheShape shape_;
  int layers_, kv_heads_, head_dim_;
  bool prerotated_ = false;
  bool host_ = true;
  int64_t slots_ = 0;
  std::shared_ptr<void> device_;
  int64_t tokens_ = 0;
  std::vector<std::vector<float>> k_, v_;
};

}  // namespace streamsink
