// A streaming session's state on the CPU backend.
#pragma once
#include <algorithm>
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
  // The next-token distribution: log-softmax after the last token (vocab).
  // On the GPU it is kept on the device after a step whose caller did not
  // read it (next_on_device); the host copy is refreshed when something
  // reads it (Engine::sync_next). Mutable so that const readers (exports)
  // can refresh it.
  mutable std::vector<float> last_logprobs;
  mutable bool next_on_device = false;
  bool has_last = false;
  int32_t next_token = -1;            // argmax of that distribution (ties: the lowest id)
  float next_logprob = 0.0f;          // and its log-probability
  uint64_t tokens_seen = 0;           // tokens processed, prefix included

  // next_token and next_logprob from the host copy of the distribution.
  void set_next_from_host() {
    const auto best = std::max_element(last_logprobs.begin(), last_logprobs.end());
    next_token = int32_t(best - last_logprobs.begin());
    next_logprob = *best;
  }

  int64_t cache_fill() const {
    if (cache) return cache->filled();
    return int64_t(history.size());
  }
};

}  // namespace streamsink
