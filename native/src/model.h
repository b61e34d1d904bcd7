// A loaded model on the CPU backend: fp32 weights in a canonical layout and
// the batched forward pass shared by all four architectures.
//
// Canonical layout (whatever the checkpoint's):
//   wqkv:  (heads + 2 * kv_heads) * head_dim rows = [q heads | k heads | v heads]
//   w_up:  SwiGLU: (2 * inter, hidden) = [gate | up];  GELU: (inter, hidden)
// One forward call runs one engine step: the tokens of every sequence are
// stacked into one matrix for the GEMMs; attention runs per (sequence, KV
// head) against that sequence's cache.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cpu/thread_pool.h"
#include "model_config.h"
#include "rope.h"

namespace streamsink {

class KvCache;

struct LayerWeights {
  std::vector<float> norm1_w, norm1_b;  // attention input norm (and MLP input when shared)
  std::vector<float> norm2_w, norm2_b;  // MLP input norm; empty when shared with norm1
  std::vector<float> wqkv, bqkv;
  std::vector<float> wo, bo;
  std::vector<float> w_up, b_up;
  std::vector<float> w_down, b_down;
};

struct ForwardSequence {
  KvCache* cache = nullptr;       // tokens are written from cache->tokens() on
  bool discard_kv = false;        // GPU: a throwaway cache (recompute); entries need not be stored
  const int32_t* tokens = nullptr;
  int64_t count = 0;
  bool all_logits = false;        // logits for every token, else the last only
  float* logits = nullptr;        // (all_logits ? count : 1, vocab); GPU: may be null (not copied to the host)
  // GPU only: the most likely next token after the last row (ties: the
  // lowest id) and its log-probability, chosen on the device. The device
  // also keeps that row's log-softmax with the cache (GpuBackend::
  // download_next), so the host copies a session's whole distribution only
  // when it reads it.
  int32_t* next_token = nullptr;
  float* next_logprob = nullptr;
  // GPU only: the rows copied to `logits` hold their log-softmax, computed
  // on the device, instead of raw logits (the host then has none to take).
  bool logprobs = false;
};

class Model {
 public:
  static std::unique_ptr<Model> load(const std::string& model_dir, int threads);

  const ModelConfig& config() const { return config_; }
  uint64_t model_hash() const { return hash_; }
  int64_t parameter_count() const { return params_; }
  int threads() const { return pool_->size(); }

  // Runs the tokens of every sequence through the model, appending their
  // keys/values to each sequence's cache (advancing cache->tokens()).
  void forward(std::vector<ForwardSequence>& seqs);

  // Read-only views of the canonical fp32 weights (the GPU backend uploads them).
  const LayerWeights& layer(int l) const { return layers_[size_t(l)]; }
  const std::vector<float>& embedding() const { return embed_; }
  const std::vector<float>& lm_head() const { return lm_head_.empty() ? embed_ : lm_head_; }
  const std::vector<float>& final_norm_weight() const { return final_w_; }
  const std::vector<float>& final_norm_bias() const { return final_b_; }
  const std::vector<float>& alibi() const { return alibi_slopes_; }
  // The checkpoint stores fp16 (the GPU backend then keeps fp16, else bf16).
  bool checkpoint_dtype_fp16() const { return fp16_; }
  // Drops the host copy of the weights once a GPU backend holds them.
  void release_host_weights();

 private:
  Model() = default;
  void load_weights(const class TensorStore& store);
  void norm(const float* x, int64_t rows, const std::vector<float>& w, const std::vector<float>& b, float* y) const;

  ModelConfig config_;
  uint64_t hash_ = 0;
  int64_t params_ = 0;
  bool fp16_ = false;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<RopeTable> rope_;
  std::vector<float> alibi_slopes_;
  std::vector<float> embed_;     // (vocab, hidden)
  std::vector<float> lm_head_;   // (vocab, hidden); empty when tied to embed_
  std::vector<float> final_w_, final_b_;
  std::vector<LayerWeights> layers_;
};

}  // namespace streamsink
