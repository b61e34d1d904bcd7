// Cache policies and the mapping from a session's token index to cache slots
// and in-cache positions (docs/cache-semantics.md).
//
// Slot layout of a `sinks` cache with S sinks and window W (capacity S+W):
//   [ sink 0 .. sink S-1 | ring 0 .. ring W-1 ]
// Token t < S lives in slot t; token t >= S lives in ring slot (t-S) mod W, so
// writing token t evicts token t-W (never a sink). When token t is processed
// it attends to C_t, listed in order:
//   t < S+W : slots 0..t, at positions 0..t (nothing evicted yet)
//   else    : sinks at positions 0..S-1, then tokens t-W+1..t at positions
//             S..S+W-1, found at ring slots (j-S) mod W.
// `window` is S = 0. `dense` never evicts: token t in slot t, position t.
#pragma once
#include <cstdint>
#include <string>

namespace streamsink {

enum class Policy : uint8_t { Dense = 0, Window = 1, Recompute = 2, Sinks = 3 };

const char* policy_name(Policy p);
// Throws EngineError(InvalidArgument) on an unknown name.
Policy parse_policy(const std::string& name);

struct CacheShape {
  Policy policy = Policy::Sinks;
  int64_t sinks = 0;   // S (0 for window, recompute, dense)
  int64_t window = 0;  // W (0 for dense = unbounded)

  bool bounded() const { return policy != Policy::Dense; }
  int64_t capacity() const { return sinks + window; }

  // Number of entries token t attends to (including itself).
  int64_t visible(int64_t t) const {
    if (!bounded() || t < sinks + window) return t + 1;
    return sinks + window;
  }
  // Slot that token t is written to.
  int64_t slot_of(int64_t t) const {
    if (!bounded() || t < sinks) return t;
    return sinks + (t - sinks) % window;
  }
  // Slot of entry i (position i) of C_t.
  int64_t entry_slot(int64_t t, int64_t i) const {
    if (!bounded() || t < sinks + window || i < sinks) return i;
    int64_t token = t - window + 1 + (i - sinks);
    return sinks + (token - sinks) % window;
  }
};

}  // namespace streamsink
