// Session export/import: the versioned, checksummed binary a session's state
// travels in (failover snapshots, CPU<->GPU moves). Layout, little-endian:
//
//   "SSNKSESS"            8 bytes magic
//   u32 format version    (kFormatVersion)
//   u32 header length     bytes of the header block that follows
//   header block          model hash, shape, policy, counters (see write_header)
//   u32 header crc32
//   parts, each:          u32 tag, u64 length, bytes, u32 crc32 of the bytes
//     'SINK'  KV of sink slots [0, min(S, filled slots))  per layer: K then V
//     'WIND'  KV of slots [S, filled slots)                per layer: K then V
//     'TOKS'  recompute history then pending prefix (int32)
//     'LAST'  log-softmax after the last token (vocab floats), if any
//   "SSNKEND!"            8 bytes trailer
// Sinks and window are separate parts so a snapshot store can write the sinks
// once and the window incrementally. Every length is checked against the
// bytes remaining before it is used; any mismatch is SnapshotCorrupt, another
// model or layout is SnapshotMismatch.
#include <cstring>

#include "checksum.h"
#include "engine.h"
#include "errors.h"

namespace streamsink {

namespace {

constexpr char kMagic[8] = {'S', 'S', 'N', 'K', 'S', 'E', 'S', 'S'};
constexpr char kTrailer[8] = {'S', 'S', 'N', 'K', 'E', 'N', 'D', '!'};
constexpr uint32_t kFormatVersion = 1;
constexpr uint32_t kTagSink = 0x4B4E4953, kTagWind = 0x444E4957, kTagToks = 0x534B4F54, kTagLast = 0x5453414C;

class Writer {
 public:
  std::vector<uint8_t> buf;
  template <typename T>
  void put(T v) {
    size_t o = buf.size();
    buf.resize(o + sizeof(T));
    std::memcpy(&buf[o], &v, sizeof(T));
  }
  void bytes(const void* p, size_t n) {
    size_t o = buf.size();
    buf.resize(o + n);
    if (n) std::memcpy(&buf[o], p, n);
  }
};

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  template <typename T>
  T get(const char* what) {
    T v;
    need(sizeof(T), what);
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  const uint8_t* take(size_t n, const char* what) {
    need(n, what);
    const uint8_t* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  size_t pos() const { return pos_; }
  size_t remaining() const { return n_ - pos_; }

 private:
  void need(size_t n, const char* what) const {
    if (n > n_ - pos_) throw EngineError(ErrorCode::SnapshotCorrupt, std::string("session snapshot truncated in ") + what);
  }
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

// The slots [begin, end) of a GPU session's cache copied to host arrays
// (fp32) for as long as this lives, then dropped again; a no-op for a CPU
// cache, which lives on the host.
class HostCopy {
 public:
  using Ranges = std::vector<std::pair<int64_t, int64_t>>;
  HostCopy(GpuBackend* gpu, KvCache& cache, const Ranges& ranges) : cache_(gpu ? &cache : nullptr) {
    if (gpu) gpu->download(cache, ranges);
  }
  HostCopy(const HostCopy&) = delete;
  HostCopy& operator=(const HostCopy&) = delete;
  ~HostCopy() {
    if (cache_) cache_->set_host_storage(false);
  }

 private:
  KvCache* cache_;
};

void put_part(Writer& w, uint32_t tag, const void* data, size_t n) {
  w.put<uint32_t>(tag);
  w.put<uint64_t>(n);
  w.bytes(data, n);
  w.put<uint32_t>(crc32(data, n));
}

// KV of slots [begin, end) for every layer: layer-major, K block then V block.
std::vector<float> gather_slots(KvCache& cache, int64_t begin, int64_t end) {
  std::vector<float> out;
  const int64_t sf = cache.slot_floats();
  for (int l = 0; l < cache.layers(); ++l) {
    auto& k = cache.layer_keys(l);
    auto& v = cache.layer_values(l);
    out.insert(out.end(), k.begin() + begin * sf, k.begin() + end * sf);
    out.insert(out.end(), v.begin() + begin * sf, v.begin() + end * sf);
  }
  return out;
}

void scatter_slots(KvCache& cache, int64_t begin, int64_t end, const float* src) {
  const int64_t sf = cache.slot_floats(), n = (end - begin) * sf;
  for (int l = 0; l < cache.layers(); ++l) {
    std::memcpy(cache.layer_keys(l).data() + begin * sf, src, sizeof(float) * size_t(n));
    src += n;
    std::memcpy(cache.layer_values(l).data() + begin * sf, src, sizeof(float) * size_t(n));
    src += n;
  }
}

}  // namespace

std::vector<uint8_t> Engine::export_session(uint64_t id) const { return encode_session(find(id), true); }

// `with_cache` false: the SINK and WIND parts are written empty (the skeleton
// of export_session_slots).
std::vector<uint8_t> Engine::encode_session(const Session& s, bool with_cache) const {
  sync_next(s);
  const ModelConfig& c = model_->config();
  Writer w;
  w.bytes(kMagic, 8);
  w.put<uint32_t>(kFormatVersion);

  Writer h;
  h.put<uint64_t>(model_->model_hash());
  h.put<uint32_t>(uint32_t(c.layers));
  h.put<uint32_t>(uint32_t(c.kv_heads));
  h.put<uint32_t>(uint32_t(c.head_dim));
  h.put<uint32_t>(uint32_t(c.vocab_size));
  h.put<uint8_t>(uint8_t(s.options.policy));
  h.put<uint8_t>(0);  // cache dtype: 0 = fp32
  h.put<uint16_t>(0);
  h.put<int64_t>(s.options.sinks);
  h.put<int64_t>(s.options.window);
  h.put<int64_t>(s.options.max_dense_tokens);
  h.put<int32_t>(s.options.sink_token);
  h.put<uint64_t>(s.tokens_seen);
  h.put<int64_t>(s.cache ? s.cache->tokens() : 0);
  h.put<uint8_t>(s.has_last ? 1 : 0);
  h.put<uint32_t>(uint32_t(s.history.size()));
  h.put<uint32_t>(uint32_t(s.pending_prefix.size()));

  w.put<uint32_t>(uint32_t(h.buf.size()));
  w.bytes(h.buf.data(), h.buf.size());
  w.put<uint32_t>(crc32(h.buf.data(), h.buf.size()));

  if (s.cache && !with_cache) {
    put_part(w, kTagSink, nullptr, 0);
    put_part(w, kTagWind, nullptr, 0);
  } else if (s.cache) {
    KvCache& cache = *s.cache;
    const int64_t filled_slots = cache.shape().bounded() ? std::min(cache.tokens(), cache.shape().capacity()) : cache.tokens();
    const HostCopy host(gpu_.get(), cache, {{0, filled_slots}});
    const int64_t sink_end = std::min(s.options.sinks, filled_slots);
    std::vector<float> sinks = gather_slots(cache, 0, sink_end);
    std::vector<float> window = gather_slots(cache, sink_end, filled_slots);
    put_part(w, kTagSink, sinks.data(), sinks.size() * sizeof(float));
    put_part(w, kTagWind, window.data(), window.size() * sizeof(float));
  }
  std::vector<int32_t> toks(s.history.begin(), s.history.end());
  toks.insert(toks.end(), s.pending_prefix.begin(), s.pending_prefix.end());
  put_part(w, kTagToks, toks.data(), toks.size() * sizeof(int32_t));
  if (s.has_last) put_part(w, kTagLast, s.last_logprobs.data(), s.last_logprobs.size() * sizeof(float));
  w.bytes(kTrailer, 8);
  return std::move(w.buf);
}

std::vector<uint8_t> Engine::export_session_since(uint64_t id, int64_t from_tokens) const {
  const Session& s = find(id);
  Writer w;
  if (!s.cache || !s.cache->shape().bounded()) {
    w.put<uint8_t>(0);
    std::vector<uint8_t> whole = encode_session(s, true);
    w.bytes(whole.data(), whole.size());
    return std::move(w.buf);
  }
  KvCache& cache = *s.cache;
  const int64_t S = s.options.sinks, W = s.options.window, t1 = cache.tokens();
  const int64_t filled_slots = std::min(t1, cache.shape().capacity());
  const int64_t sink_end = std::min(S, filled_slots);
  // Token t >= S is in window slot (t - S) mod W: the slots written since
  // `from_tokens`, or all of them (a first write, or a whole window went by).
  const bool all = from_tokens < 0 || from_tokens > t1;
  const int64_t first = std::max(from_tokens, S);
  std::vector<int32_t> slots;
  if (all || t1 - first >= W) {
    for (int64_t j = 0; j < filled_slots - sink_end; ++j) slots.push_back(int32_t(j));
  } else {
    for (int64_t t = first; t < t1; ++t) slots.push_back(int32_t((t - S) % W));
  }
  const bool with_sinks = all || from_tokens < S;
  const std::vector<uint8_t> skeleton = encode_session(s, false);
  // Only what goes out comes down from a GPU: the sinks if they do, and the
  // written window slots as runs of consecutive ring indices.
  HostCopy::Ranges ranges;
  if (with_sinks && sink_end > 0) ranges.push_back({0, sink_end});
  for (size_t i = 0; i < slots.size();) {
    size_t j = i + 1;
    while (j < slots.size() && slots[j] == slots[j - 1] + 1) ++j;
    ranges.push_back({sink_end + slots[i], sink_end + slots[j - 1] + 1});
    i = j;
  }
  const HostCopy host(gpu_.get(), cache, ranges);
  w.put<uint8_t>(1);
  w.put<uint64_t>(skeleton.size());
  w.bytes(skeleton.data(), skeleton.size());
  const std::vector<float> sinks = with_sinks ? gather_slots(cache, 0, sink_end) : std::vector<float>{};
  w.put<uint8_t>(with_sinks ? 1 : 0);
  w.put<uint64_t>(sinks.size() * sizeof(float));
  w.bytes(sinks.data(), sinks.size() * sizeof(float));
  w.put<uint32_t>(uint32_t(slots.size()));
  w.bytes(slots.data(), slots.size() * sizeof(int32_t));
  const int64_t sf = cache.slot_floats();
  for (int32_t j : slots)
    for (int l = 0; l < cache.layers(); ++l) {
      w.bytes(cache.layer_keys(l).data() + (sink_end + j) * sf, sizeof(float) * size_t(sf));
      w.bytes(cache.layer_values(l).data() + (sink_end + j) * sf, sizeof(float) * size_t(sf));
    }
  return std::move(w.buf);
}

uint64_t Engine::import_session(const uint8_t* data, size_t size) {
  const ModelConfig& c = model_->config();
  Reader r(data, size);
  if (std::memcmp(r.take(8, "magic"), kMagic, 8) != 0)
    throw EngineError(ErrorCode::SnapshotCorrupt, "not a streamsink session snapshot (bad magic)");
  uint32_t version = r.get<uint32_t>("version");
  if (version != kFormatVersion)
    throw EngineError(ErrorCode::SnapshotMismatch, "session snapshot format version " + std::to_string(version) +
                                                       " is not supported (this build reads version " + std::to_string(kFormatVersion) + ")");
  uint32_t header_len = r.get<uint32_t>("header length");
  const uint8_t* header = r.take(header_len, "header");
  if (r.get<uint32_t>("header checksum") != crc32(header, header_len))
    throw EngineError(ErrorCode::SnapshotCorrupt, "session snapshot header checksum mismatch");

  Reader h(header, header_len);
  uint64_t model_hash = h.get<uint64_t>("header");
  uint32_t layers = h.get<uint32_t>("header"), kv_heads = h.get<uint32_t>("header"),
           head_dim = h.get<uint32_t>("header"), vocab = h.get<uint32_t>("header");
  uint8_t policy = h.get<uint8_t>("header");
  uint8_t dtype = h.get<uint8_t>("header");
  h.get<uint16_t>("header");
  SessionOptions o;
  o.sinks = h.get<int64_t>("header");
  o.window = h.get<int64_t>("header");
  o.max_dense_tokens = h.get<int64_t>("header");
  o.sink_token = h.get<int32_t>("header");
  uint64_t tokens_seen = h.get<uint64_t>("header");
  int64_t cache_tokens = h.get<int64_t>("header");
  bool has_last = h.get<uint8_t>("header") != 0;
  uint32_t history_len = h.get<uint32_t>("header");
  uint32_t prefix_len = h.get<uint32_t>("header");

  if (model_hash != model_->model_hash() || layers != uint32_t(c.layers) || kv_heads != uint32_t(c.kv_heads) ||
      head_dim != uint32_t(c.head_dim) || vocab != uint32_t(c.vocab_size))
    throw EngineError(ErrorCode::SnapshotMismatch, "session snapshot was made with another model");
  if (dtype != 0) throw EngineError(ErrorCode::SnapshotMismatch, "session snapshot cache dtype is not supported by the CPU backend");
  if (policy > uint8_t(Policy::Sinks)) throw EngineError(ErrorCode::SnapshotCorrupt, "session snapshot has an unknown policy");
  o.policy = Policy(policy);
  try {
    o = validate_options(o);
  } catch (const EngineError& e) {
    throw EngineError(ErrorCode::SnapshotCorrupt, std::string("session snapshot has invalid options: ") + e.what());
  }
  if (cache_tokens < 0 || uint64_t(cache_tokens) > tokens_seen || (o.policy == Policy::Dense && cache_tokens > o.max_dense_tokens))
    throw EngineError(ErrorCode::SnapshotCorrupt, "session snapshot has inconsistent token counts");

  auto s = std::make_unique<Session>();
  s->options = o;
  s->shape = CacheShape{o.policy, o.sinks, o.window};
  s->tokens_seen = tokens_seen;
  s->has_last = has_last;
  s->last_logprobs.assign(size_t(c.vocab_size), 0.0f);

  auto read_part = [&](uint32_t tag, const char* name, size_t expect_bytes) -> const uint8_t* {
    uint32_t got_tag = r.get<uint32_t>(name);
    if (got_tag != tag) throw EngineError(ErrorCode::SnapshotCorrupt, std::string("session snapshot: expected part ") + name);
    uint64_t len = r.get<uint64_t>(name);
    if (len != expect_bytes)
      throw EngineError(ErrorCode::SnapshotCorrupt, std::string("session snapshot: part ") + name + " has the wrong length");
    const uint8_t* p = r.take(size_t(len), name);
    if (r.get<uint32_t>(name) != crc32(p, size_t(len)))
      throw EngineError(ErrorCode::SnapshotCorrupt, std::string("session snapshot: checksum mismatch in part ") + name);
    return p;
  };

  if (o.policy != Policy::Recompute) {
    const int64_t filled = s->shape.bounded() ? std::min(cache_tokens, s->shape.capacity()) : cache_tokens;
    const int64_t sink_end = std::min(o.sinks, filled);
    const size_t per_slot = size_t(c.layers) * 2 * size_t(c.kv_heads) * size_t(c.head_dim) * sizeof(float);
    if (size_t(filled) > r.remaining() / per_slot)
      throw EngineError(ErrorCode::SnapshotCorrupt, "session snapshot truncated: its cache needs more bytes than remain");
    s->cache = std::make_unique<KvCache>(s->shape, c.layers, c.kv_heads, c.head_dim);
    s->cache->reserve_tokens(cache_tokens);
    s->cache->set_tokens(cache_tokens);
    const uint8_t* sinks = read_part(kTagSink, "SINK", size_t(sink_end) * per_slot);
    const uint8_t* window = read_part(kTagWind, "WIND", size_t(filled - sink_end) * per_slot);
    std::vector<float> tmp(size_t(filled) * per_slot / sizeof(float));
    std::memcpy(tmp.data(), sinks, size_t(sink_end) * per_slot);
    scatter_slots(*s->cache, 0, sink_end, tmp.data());
    std::memcpy(tmp.data(), window, size_t(filled - sink_end) * per_slot);
    scatter_slots(*s->cache, sink_end, filled, tmp.data());
    if (gpu_) gpu_->upload(*s->cache);
  } else if (history_len > uint64_t(o.window)) {
    throw EngineError(ErrorCode::SnapshotCorrupt, "session snapshot history is longer than its window");
  }
  if (prefix_len > 1) throw EngineError(ErrorCode::SnapshotCorrupt, "session snapshot has an invalid pending prefix");
  const uint8_t* toks = read_part(kTagToks, "TOKS", (size_t(history_len) + prefix_len) * sizeof(int32_t));
  for (uint32_t i = 0; i < history_len + prefix_len; ++i) {
    int32_t t;
    std::memcpy(&t, toks + 4 * i, 4);
    if (t < 0 || t >= c.vocab_size) throw EngineError(ErrorCode::SnapshotCorrupt, "session snapshot holds an out-of-vocabulary token");
    if (i < history_len) s->history.push_back(t);
    else s->pending_prefix.push_back(t);
  }
  if (has_last) {
    const uint8_t* last = read_part(kTagLast, "LAST", size_t(c.vocab_size) * sizeof(float));
    std::memcpy(s->last_logprobs.data(), last, size_t(c.vocab_size) * sizeof(float));
    s->set_next_from_host();
  }
  if (r.remaining() != 8 || std::memcmp(r.take(8, "trailer"), kTrailer, 8) != 0)
    throw EngineError(ErrorCode::SnapshotCorrupt, "session snapshot has a bad trailer or trailing bytes");

  s->id = next_id_++;
  uint64_t id = s->id;
  sessions_.emplace(id, std::move(s));
  return id;
}

}  // namespace streamsink
