#include "kv_cache.h"

#include <algorithm>

namespace streamsink {

KvCache::KvCache(const CacheShape& shape, int layers, int kv_heads, int head_dim, bool prerotated, bool host)
    : shape_(shape), layers_(layers), kv_heads_(kv_heads), head_dim_(head_dim), prerotated_(prerotated && !shape.bounded()),
      host_(host), k_(layers), v_(layers) {
  if (shape_.bounded()) reserve_tokens(shape_.capacity());
}

void KvCache::reserve_tokens(int64_t end) {
  int64_t need = shape_.bounded() ? shape_.capacity() : end;
  if (need <= slots_) return;
  int64_t grow = shape_.bounded() ? need : std::max(need, slots_ + slots_ / 2 + 16);
  slots_ = grow;
  if (host_) set_host_storage(true);
}

void KvCache::set_host_storage(bool on) {
  host_ = on;
  for (int l = 0; l < layers_; ++l) {
    if (on) {
      k_[l].resize(size_t(slots_ * slot_floats()));
      v_[l].resize(size_t(slots_ * slot_floats()));
    } else {
      std::vector<float>().swap(k_[l]);
      std::vector<float>().swap(v_[l]);
    }
  }
}

}  // namespace streamsink
