// The engine: one loaded model plus its sessions, and the batched step that
// advances many sessions at once. Not thread-safe by itself: the Node addon
// runs at most one call at a time on it (steps off the JS thread).
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "model.h"
#include "session.h"

namespace streamsink {

struct StepEntry {
  uint64_t session = 0;
  std::vector<int32_t> tokens;
  bool logprobs = false;  // per-token log-probs of `tokens`
  // The whole next-token distribution, when the step returns it; false: only
  // the next token (a greedy decode), and on the GPU the distribution stays
  // on the device until something reads it.
  bool next_distribution = true;
};

struct StepOutput {
  // logprob[i] = log p(tokens[i] | everything before); NaN for a session's very first token.
  std::vector<float> token_logprobs;
  // log-softmax of the distribution after the last token (vocab), when asked for.
  std::vector<float> next_logprobs;
  // Its most likely token (ties: the lowest id) and that token's log-prob;
  // -1 while the session has seen no token.
  int32_t next_token = -1;
  float next_token_logprob = NAN;
};

struct SessionInfo {
  Policy policy;
  int64_t sinks, window, cache_fill, capacity;
  uint64_t tokens_seen;
  int32_t sink_token;
};

struct EngineOptions {
  int threads = 1;
  std::string backend = "cpu";  // cpu | cuda | auto (cuda when a device is visible)
  GpuOptions gpu;               // dtype: default bf16, fp16 for fp16 checkpoints
  bool gpu_dtype_set = false;
};

class Engine {
 public:
  Engine(const std::string& model_dir, const EngineOptions& options);
  Engine(const std::string& model_dir, int threads) : Engine(model_dir, EngineOptions{threads, "cpu", {}, false}) {}

  const Model& model() const { return *model_; }
  // "cpu" or "cuda".
  const char* backend() const { return gpu_ ? "cuda" : "cpu"; }
  const GpuBackend* gpu() const { return gpu_.get(); }

  uint64_t open_session(const SessionOptions& options);
  void close_session(uint64_t id);
  SessionInfo session_info(uint64_t id) const;
  size_t session_count() const { return sessions_.size(); }

  // Validates every entry before touching any session, so a bad entry fails
  // the whole step without changing state.
  std::vector<StepOutput> step(const std::vector<StepEntry>& entries, bool return_next);

  std::vector<uint8_t> export_session(uint64_t id) const;
  // For incremental snapshot stores: what changed since the session's cache
  // stream held `from_tokens` tokens (< 0: everything). Layout: u8 kind;
  // kind 0 (no sink + window cache): the whole export follows. Kind 1: u64
  // length + the export with empty SINK and WIND parts (the skeleton), u8
  // with-sinks, u64 length + the sink payload, u32 n, n x i32 window ring
  // slots, then those slots, each per layer K then V (kv_heads x head_dim
  // fp32). Costs what it copies, not the cache size.
  std::vector<uint8_t> export_session_since(uint64_t id, int64_t from_tokens) const;
  uint64_t import_session(const uint8_t* data, size_t size);

 private:
  Session& find(uint64_t id);
  const Session& find(uint64_t id) const;
  std::vector<uint8_t> encode_session(const Session& s, bool with_cache) const;
  void step_recompute(Session& s, const std::vector<int32_t>& tokens, std::vector<float>& row_logprobs, bool all);
  SessionOptions validate_options(SessionOptions o) const;
  void run_forward(std::vector<ForwardSequence>& seqs);
  // Brings a GPU session's next-token distribution to the host copy.
  void sync_next(const Session& s) const;
  std::unique_ptr<KvCache> new_cache(const CacheShape& shape, bool scratch = false) const;

  std::unique_ptr<Model> model_;
  std::unique_ptr<GpuBackend> gpu_;
  std::map<uint64_t, std::unique_ptr<Session>> sessions_;
  uint64_t next_id_ = 1;
};

}  // namespace streamsink
