#include "engine.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "errors.h"

namespace streamsink {

namespace {

void log_softmax(const float* logits, int64_t n, float* out) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double(logits[i]) - m);
  const double lse = m + std::log(sum);
  for (int64_t i = 0; i < n; ++i) out[i] = float(double(logits[i]) - lse);
}

}  // namespace

void Engine::sync_next(const Session& s) const {
  if (!s.next_on_device) return;
  gpu_->download_next(*s.cache, s.last_logprobs.data());
  s.next_on_device = false;
}

Engine::Engine(const std::string& model_dir, const EngineOptions& options) {
  if (options.backend != "cpu" && options.backend != "cuda" && options.backend != "auto")
    throw EngineError(ErrorCode::InvalidArgument, "backend must be cpu, cuda or auto, got \"" + options.backend + "\"");
  const bool want_gpu = options.backend == "cuda" || (options.backend == "auto" && cuda_device_count() > 0);
  if (options.backend == "cuda") require_cuda_backend();
  model_ = Model::load(model_dir, options.threads);
  if (want_gpu) {
    GpuOptions g = options.gpu;
    if (!options.gpu_dtype_set) g.dtype = model_->checkpoint_dtype_fp16() ? GpuDtype::FP16 : GpuDtype::BF16;
    gpu_ = create_gpu_backend(*model_, g);
    // The GPU holds the weights now; the CPU copy is not used again.
    model_->release_host_weights();
  }
}

void Engine::run_forward(std::vector<ForwardSequence>& seqs) {
  if (gpu_) gpu_->forward(seqs);
  else model_->forward(seqs);
}

std::unique_ptr<KvCache> Engine::new_cache(const CacheShape& shape, bool scratch) const {
  const ModelConfig& c = model_->config();
  auto cache = std::make_unique<KvCache>(shape, c.layers, c.kv_heads, c.head_dim, /*prerotated=*/scratch, /*host=*/!gpu_);
  if (gpu_ && !scratch) gpu_->attach(*cache);
  return cache;
}

SessionOptions Engine::validate_options(SessionOptions o) const {
  const int64_t kMaxSlots = int64_t(1) << 24;
  if (o.policy == Policy::Dense) {
    o.sinks = 0;
    o.window = 0;
    if (o.max_dense_tokens < 1) throw EngineError(ErrorCode::InvalidArgument, "max dense tokens must be positive");
  } else {
    if (o.policy != Policy::Sinks) o.sinks = 0;
    if (o.window < 1 || o.window > kMaxSlots)
      throw EngineError(ErrorCode::InvalidArgument, "window must be between 1 and " + std::to_string(kMaxSlots) + ", got " + std::to_string(o.window));
    if (o.sinks < 0 || o.sinks > 1024)
      throw EngineError(ErrorCode::InvalidArgument, "sinks must be between 0 and 1024, got " + std::to_string(o.sinks));
  }
  if (o.sink_token < -1 || o.sink_token >= model_->config().vocab_size)
    throw EngineError(ErrorCode::InvalidArgument, "sink token " + std::to_string(o.sink_token) + " is outside the vocabulary");
  return o;
}

uint64_t Engine::open_session(const SessionOptions& options) {
  const ModelConfig& c = model_->config();
  auto s = std::make_unique<Session>();
  s->options = validate_options(options);
  s->id = next_id_++;
  s->shape = CacheShape{s->options.policy, s->options.sinks, s->options.window};
  if (s->options.policy != Policy::Recompute) s->cache = new_cache(s->shape);
  if (s->options.sink_token >= 0) s->pending_prefix.push_back(s->options.sink_token);
  s->last_logprobs.assign(size_t(c.vocab_size), 0.0f);
  uint64_t id = s->id;
  sessions_.emplace(id, std::move(s));
  return id;
}

void Engine::close_session(uint64_t id) {
  if (sessions_.erase(id) == 0) throw EngineError(ErrorCode::SessionNotFound, "no session " + std::to_string(id));
}

Session& Engine::find(uint64_t id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) throw EngineError(ErrorCode::SessionNotFound, "no session " + std::to_string(id));
  return *it->second;
}

const Session& Engine::find(uint64_t id) const {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) throw EngineError(ErrorCode::SessionNotFound, "no session " + std::to_string(id));
  return *it->second;
}

SessionInfo Engine::session_info(uint64_t id) const {
  const Session& s = find(id);
  return SessionInfo{s.options.policy, s.options.sinks, s.options.window, s.cache_fill(),
                     s.shape.bounded() ? s.shape.capacity() : (s.cache ? s.cache->slots_allocated() : 0),
                     s.tokens_seen, s.options.sink_token};
}

void Engine::step_recompute(Session& s, const std::vector<int32_t>& tokens, std::vector<float>& row_logprobs, bool all) {
  const ModelConfig& c = model_->config();
  const int64_t V = c.vocab_size;
  const CacheShape dense{Policy::Dense, 0, 0};
  std::vector<float> logits(static_cast<size_t>(V));
  // With a learned sink token every recomputed window starts with it, as
  // every training sample did: the sink token, the last W-2 tokens, the
  // current one (W tokens, the budget of `sinks` 1+(W-1)). The stream's own
  // first token is then the sink token itself, and is not kept in history.
  const bool lead = s.options.sink_token >= 0 && s.options.window >= 2;
  const int64_t keep = s.options.window - 1 - (lead ? 1 : 0);
  auto remember = [&](int32_t token) {
    s.history.push_back(token);
    while (int64_t(s.history.size()) > keep) s.history.pop_front();
  };
  for (size_t j = 0; j < tokens.size(); ++j) {
    const bool is_lead = lead && s.tokens_seen == 0 && j == 0;
    // A recompute session's state is its last W-1 (W-2 with a sink token)
    // tokens; logits are only needed where the caller reads them (every
    // token, or the chunk's last).
    if (!all && j + 1 < tokens.size()) {
      if (!is_lead) remember(tokens[j]);
      continue;
    }
    std::vector<int32_t> window;
    window.reserve(s.history.size() + 2);
    if (lead && !is_lead) window.push_back(s.options.sink_token);
    window.insert(window.end(), s.history.begin(), s.history.end());
    window.push_back(tokens[j]);
    std::unique_ptr<KvCache> scratch = new_cache(dense, /*scratch=*/true);
    std::vector<ForwardSequence> seq(1);
    seq[0].cache = scratch.get();
    seq[0].discard_kv = true;
    seq[0].tokens = window.data();
    seq[0].count = int64_t(window.size());
    seq[0].logits = logits.data();
    run_forward(seq);
    float* dst = all ? &row_logprobs[j * size_t(V)] : s.last_logprobs.data();
    log_softmax(logits.data(), V, dst);
    if (all && j + 1 == tokens.size()) std::copy(dst, dst + V, s.last_logprobs.begin());
    if (!is_lead) remember(tokens[j]);
  }
}

std::vector<StepOutput> Engine::step(const std::vector<StepEntry>& entries, bool return_next) {
  const ModelConfig& c = model_->config();
  const int64_t V = c.vocab_size;
  std::set<uint64_t> seen;
  for (const StepEntry& e : entries) {
    Session& s = find(e.session);
    if (!seen.insert(e.session).second)
      throw EngineError(ErrorCode::InvalidArgument, "session " + std::to_string(e.session) + " appears twice in one step");
    for (int32_t t : e.tokens)
      if (t < 0 || t >= c.vocab_size)
        throw EngineError(ErrorCode::InvalidArgument, "token id " + std::to_string(t) + " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
    if (s.options.policy == Policy::Dense &&
        int64_t(s.tokens_seen + e.tokens.size() + s.pending_prefix.size()) > s.options.max_dense_tokens)
      throw EngineError(ErrorCode::Capacity, "dense session " + std::to_string(e.session) + " would exceed its limit of " +
                                                 std::to_string(s.options.max_dense_tokens) + " tokens");
  }

  // Per entry: the tokens actually run (pending prefix first) and their logits.
  struct Work {
    Session* session;
    std::vector<int32_t> tokens;
    size_t prefix;
    bool all;
    bool host;                  // the logits come to the host (else GPU: the next token only)
    std::vector<float> logits;  // log-softmaxed rows (CPU: raw logits first, turned in place)
    int32_t next_token = -1;    // GPU: chosen on the device
    float next_logprob = 0.0f;
  };
  std::vector<Work> work(entries.size());
  std::vector<ForwardSequence> batch;
  std::vector<size_t> batch_owner;
  for (size_t i = 0; i < entries.size(); ++i) {
    Work& w = work[i];
    w.session = &find(entries[i].session);
    w.tokens = w.session->pending_prefix;
    w.prefix = w.tokens.size();
    w.tokens.insert(w.tokens.end(), entries[i].tokens.begin(), entries[i].tokens.end());
    w.all = entries[i].logprobs;
    // On the GPU a greedy decode's distribution stays on the device: one
    // token and its log-prob come back instead of 4 x vocab bytes.
    w.host = !gpu_ || w.all || (return_next && entries[i].next_distribution) ||
             w.session->options.policy == Policy::Recompute;
    if (w.tokens.empty()) continue;
    // The first token's log-prob reads the distribution before it.
    if (w.all && w.session->has_last) sync_next(*w.session);
    if (w.host) w.logits.resize(size_t((w.all ? w.tokens.size() : 1) * V));
    if (w.session->options.policy == Policy::Recompute) continue;
    ForwardSequence fs;
    fs.cache = w.session->cache.get();
    fs.tokens = w.tokens.data();
    fs.count = int64_t(w.tokens.size());
    fs.all_logits = w.all;
    fs.logits = w.host ? w.logits.data() : nullptr;
    if (gpu_) {
      fs.next_token = &w.next_token;
      fs.next_logprob = &w.next_logprob;
      fs.logprobs = true;  // the device takes the log-softmax: vocab exponentials a row off the host
    }
    batch.push_back(fs);
    batch_owner.push_back(i);
  }
  if (!batch.empty()) run_forward(batch);

  std::vector<StepOutput> outputs(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    Work& w = work[i];
    Session& s = *w.session;
    StepOutput& out = outputs[i];
    if (!w.tokens.empty()) {
      // Distribution before the first token, needed for its log-prob.
      std::vector<float> before;
      if (w.all) before.assign(s.last_logprobs.begin(), s.last_logprobs.end());
      const bool had_last = s.has_last;
      if (s.options.policy == Policy::Recompute) {
        step_recompute(s, w.tokens, w.logits, w.all);
        s.set_next_from_host();
      } else if (w.host) {
        const int64_t rows = w.all ? int64_t(w.tokens.size()) : 1;
        if (!gpu_)  // the GPU's rows come as log-probs (ForwardSequence::logprobs)
          for (int64_t r = 0; r < rows; ++r) log_softmax(&w.logits[size_t(r * V)], V, &w.logits[size_t(r * V)]);
        std::copy(w.logits.end() - V, w.logits.end(), s.last_logprobs.begin());
        s.next_on_device = false;
        s.set_next_from_host();
      } else {
        s.next_on_device = true;
        s.next_token = w.next_token;
        s.next_logprob = w.next_logprob;
      }
      s.has_last = true;
      s.tokens_seen += w.tokens.size();
      s.pending_prefix.clear();
      if (w.all) {
        out.token_logprobs.resize(entries[i].tokens.size());
        for (size_t j = 0; j < entries[i].tokens.size(); ++j) {
          size_t k = w.prefix + j;  // index in w.tokens
          int32_t tok = w.tokens[k];
          if (k == 0) out.token_logprobs[j] = had_last ? before[size_t(tok)] : NAN;
          else out.token_logprobs[j] = w.logits[(k - 1) * size_t(V) + size_t(tok)];
        }
      }
    }
    if (s.has_last) {
      out.next_token = s.next_token;
      out.next_token_logprob = s.next_logprob;
      if (return_next && entries[i].next_distribution) {
        sync_next(s);
        out.next_logprobs = s.last_logprobs;
      }
    }
  }
  return outputs;
}

}  // namespace streamsink
