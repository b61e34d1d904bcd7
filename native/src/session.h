// A streaming session's state on the CPU backend.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "cache_policy.h"
#include "kv_cache.h"

namespace streamsink {

struct SessionOptions {
  Policy policy = Policy::Sinks;
  int64_t sinks = 4;
  int64_t window = 1020;
  int32_t sink_token = -1;          // learned sink token prepended to the stream; -1 = none
  int64_t max_dense_tokens = 1 << 20;  // guard for `dense`, which grows without bound
};

struct Session {
  uint64_t id = 0;
  SessionOptions options;
  CacheShape shape;
  std::unique_ptr<KvCache> cache;     // absent for `recompute`
  std::deque<int32_t> history;        // `recompute`: the last W-1 tokens
  std::vector<int32_t> pending_prefix;  // learned sink token not yet run
  std::vector<float> last_logprobs;   // log-softmax after the last token (vocab)
  bool has_last = false;
  uint64_t tokens_seen = 0;           // tokens processed, prefix included

  int64_t cache_fill() const {
    if (cache) return cache->filled();
    return int64_t(history.size());
  }
};

}  // namespace streamsink
