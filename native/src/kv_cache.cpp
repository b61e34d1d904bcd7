#include "kv_cache.h"

#include <algorithm>

namespace streamsink {

KvCache::KvCache(const CacheShape& shape, int layers, int kv_heads, int head_dim, bool prerotated)
    : shape_(shape), layers_(layers), kv_heads_(kv_heads), head_dim_(head_dim), prerotated_(prerotated && !shape.bounded()), k_(layers), v_(layers) {
  if (shape_.bounded()) reserve_tokens(shape_.capacity());
}

void KvCache::reserve_tokens(int64_t end) {
  int64_t need = shape_.bounded() ? shape_.capacity() : end;
  if (need <= slots_) return;
  int64_t grow = shape_.bounded() ? need : std::max(need, slots_ + slots_ / 2 + 16);
  for (int l = 0; l < layers_; ++l) {
    k_[l].resize(size_t(grow * slot_floats()));
    v_[l].resize(size_t(grow * slot_floats()));
  }
  slots_ = grow;
}

}  // namespace streamsink
