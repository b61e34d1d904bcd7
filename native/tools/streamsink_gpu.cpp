// streamsink_gpu: tests and benchmarks of the CUDA backend without Node.js.
//
//   streamsink_gpu info
//   streamsink_gpu parity <models dir> <golden dir> [--dtype D]      GPU vs the golden vectors
//   streamsink_gpu versus <model dir> [--dtype D] [--factor F] [--sessions K]   GPU vs CPU on streams F x the cache
//   streamsink_gpu snapshot <model dir> [--dtype D]                  GPU <-> CPU session moves
//   streamsink_gpu stream <model dir> --tokens N [--dtype D]         one real N-token sinks stream: latency, memory
//   streamsink_gpu score <model dir> <ids.u16> [--policy P ...]      NLL of a long token stream under one policy
//   streamsink_gpu bench [--out F] [--quick] [--batches 1,8,32]      Llama-2-7B / Mistral-7B shaped random weights
//
// Every command prints JSON lines; parity/versus/snapshot exit 1 when a
// tolerance is exceeded. Tolerances (see docs/gpu.md): fp32 1e-4 (the CPU
// parity bound), fp16 0.03 and bf16 0.25 nats on per-token log-probs.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "engine.h"
#include "errors.h"
#include "json.h"
#include "kv_cache.h"
#include "model.h"
#include "model_config.h"

using namespace streamsink;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string flag(std::vector<std::string>& args, const std::string& name, const std::string& fallback) {
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == name) {
      std::string v = args[i + 1];
      args.erase(args.begin() + long(i), args.begin() + long(i) + 2);
      return v;
    }
  return fallback;
}

bool has_flag(std::vector<std::string>& args, const std::string& name) {
  auto it = std::find(args.begin(), args.end(), name);
  if (it == args.end()) return false;
  args.erase(it);
  return true;
}

double tolerance_for(GpuDtype d) { return d == GpuDtype::FP32 ? 1e-4 : d == GpuDtype::FP16 ? 0.03 : 0.25; }

EngineOptions gpu_engine(GpuDtype dtype) {
  EngineOptions o;
  o.threads = 4;
  o.backend = "cuda";
  o.gpu.dtype = dtype;
  o.gpu_dtype_set = true;
  return o;
}

// Appends `ids` to a fresh session in uneven chunks (the first of
// `first_chunk` tokens when given: a prompt, which takes the causal prefill
// path); per-token log-probs.
std::vector<float> score(Engine& e, const SessionOptions& so, const std::vector<int32_t>& ids, size_t first_chunk = 0) {
  uint64_t s = e.open_session(so);
  const int chunks[] = {1, 7, 32, 3, 64};
  std::vector<float> out;
  size_t i = 0;
  for (int k = 0; i < ids.size(); ++k) {
    size_t n = std::min(ids.size() - i, size_t(chunks[k % 5]));
    if (k == 0 && first_chunk > 0) n = std::min(ids.size(), first_chunk);
    StepEntry en;
    en.session = s;
    en.tokens.assign(ids.begin() + long(i), ids.begin() + long(i + n));
    en.logprobs = true;
    auto r = e.step({en}, false);
    out.insert(out.end(), r[0].token_logprobs.begin(), r[0].token_logprobs.end());
    i += n;
  }
  e.close_session(s);
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b, size_t from = 1) {
  double m = 0;
  for (size_t i = from; i < std::min(a.size(), b.size()); ++i) {
    double d = std::fabs(double(a[i]) - double(b[i]));
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

// Largest and mean absolute difference from index 1 on (index 0 has no
// log-prob), accumulated over several pairs of streams.
struct ErrStats {
  double max = 0, sum = 0;
  size_t count = 0;
  void add(const std::vector<float>& a, const std::vector<float>& b) {
    max = std::max(max, max_abs_diff(a, b));
    for (size_t i = 1; i < std::min(a.size(), b.size()); ++i, ++count) sum += std::fabs(double(a[i]) - double(b[i]));
  }
  double mean() const { return count ? sum / double(count) : 0.0; }
};

Policy policy_of(const std::string& p) { return parse_policy(p); }

int cmd_parity(std::vector<std::string> args) {
  GpuDtype dtype = parse_gpu_dtype(flag(args, "--dtype", "fp32"));
  if (args.size() < 2) throw std::runtime_error("parity <models dir> <golden dir>");
  const double tol = tolerance_for(dtype);
  const char* names[] = {"llama-gqa", "pythia", "falcon-mq", "falcon-nda", "mpt"};
  bool ok = true;
  for (const char* name : names) {
    JsonValue g = parse_json(read_file(args[1] + "/" + name + ".json"), name);
    Engine gpu(args[0] + "/" + name, gpu_engine(dtype));
    for (const JsonValue& c : g.get("cases")->array) {
      SessionOptions so;
      so.policy = policy_of(c.get("policy")->string);
      so.sinks = c.get("sinks")->integer;
      so.window = c.get("window")->integer;
      std::vector<int32_t> ids;
      for (const JsonValue& v : c.get("ids")->array) ids.push_back(int32_t(v.integer));
      std::vector<float> want;
      want.push_back(NAN);
      for (const JsonValue& v : c.get("logprobs")->array) want.push_back(float(v.number));
      std::vector<float> got = score(gpu, so, ids);
      double err = max_abs_diff(got, want);
      bool pass = err <= tol && got.size() == want.size();
      ok = ok && pass;
      std::printf("{\"check\":\"parity\",\"model\":\"%s\",\"dtype\":\"%s\",\"policy\":\"%s\",\"sinks\":%lld,\"window\":%lld,"
                  "\"tokens\":%zu,\"max_abs_err\":%.3e,\"tolerance\":%.0e,\"pass\":%s}\n",
                  name, gpu_dtype_name(dtype), c.get("policy")->string.c_str(), (long long)so.sinks, (long long)so.window,
                  ids.size(), err, tol, pass ? "true" : "false");
      std::fflush(stdout);
    }
  }
  return ok ? 0 : 1;
}

std::vector<int32_t> random_ids(int64_t n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& t : ids) t = int32_t(rng() % uint64_t(vocab));
  return ids;
}

// K sessions at staggered fill levels decoded together, one token each per
// step (the batched decode path), against each stream alone on the CPU.
ErrStats batched_err(Engine& cpu, Engine& gpu, const SessionOptions& so, int64_t n, int K) {
  const int vocab = cpu.model().config().vocab_size;
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<float>> got(static_cast<size_t>(K));
  std::vector<uint64_t> sess;
  std::vector<size_t> pos;
  for (int k = 0; k < K; ++k) {
    ids.push_back(random_ids(n, vocab, 100 + uint64_t(k)));
    sess.push_back(gpu.open_session(so));
    StepEntry en;
    en.session = sess.back();
    const size_t pre = 1 + size_t(k) * size_t(n) / size_t(2 * K);
    en.tokens.assign(ids.back().begin(), ids.back().begin() + long(pre));
    en.logprobs = true;
    got[size_t(k)] = gpu.step({en}, false)[0].token_logprobs;
    pos.push_back(pre);
  }
  for (;;) {
    std::vector<StepEntry> step;
    std::vector<int> who;
    for (int k = 0; k < K; ++k) {
      if (pos[size_t(k)] >= size_t(n)) continue;
      StepEntry en;
      en.session = sess[size_t(k)];
      en.tokens = {ids[size_t(k)][pos[size_t(k)]++]};
      en.logprobs = true;
      step.push_back(std::move(en));
      who.push_back(k);
    }
    if (step.empty()) break;
    auto r = gpu.step(step, false);
    for (size_t j = 0; j < who.size(); ++j) {
      auto& g = got[size_t(who[j])];
      g.insert(g.end(), r[j].token_logprobs.begin(), r[j].token_logprobs.end());
    }
  }
  ErrStats e;
  for (int k = 0; k < K; ++k) {
    gpu.close_session(sess[size_t(k)]);
    e.add(score(cpu, so, ids[size_t(k)]), got[size_t(k)]);
  }
  return e;
}

int cmd_versus(std::vector<std::string> args) {
  GpuDtype dtype = parse_gpu_dtype(flag(args, "--dtype", "fp32"));
  const int64_t factor = std::stoll(flag(args, "--factor", "10"));
  const int64_t window = std::stoll(flag(args, "--window", "60"));
  const size_t first_chunk = size_t(std::stoll(flag(args, "--first-chunk", "0")));
  const int sessions = std::stoi(flag(args, "--sessions", "0"));
  if (args.empty()) throw std::runtime_error("versus <model dir>");
  Engine cpu(args[0], 8);
  Engine gpu(args[0], gpu_engine(dtype));
  const double tol = tolerance_for(dtype);
  bool ok = true;
  struct P {
    const char* policy;
    int64_t sinks;
  } ps[] = {{"sinks", 4}, {"window", 0}, {"recompute", 0}, {"dense", 0}};
  for (const P& p : ps) {
    SessionOptions so;
    so.policy = policy_of(p.policy);
    so.sinks = p.sinks;
    so.window = window - p.sinks;
    const int64_t n = factor * window;
    std::vector<int32_t> ids = random_ids(n, cpu.model().config().vocab_size, 7);
    std::vector<float> a = score(cpu, so, ids, first_chunk), b = score(gpu, so, ids, first_chunk);
    ErrStats e;
    e.add(a, b);
    bool pass = e.max <= tol;
    ok = ok && pass;
    std::printf("{\"check\":\"gpu_vs_cpu\",\"model\":\"%s\",\"dtype\":\"%s\",\"policy\":\"%s\",\"cache\":%lld,\"first_chunk\":%zu,\"tokens\":%lld,"
                "\"max_abs_err\":%.3e,\"mean_abs_err\":%.3e,\"tolerance\":%.0e,\"pass\":%s}\n",
                args[0].c_str(), gpu_dtype_name(dtype), p.policy, (long long)window, first_chunk, (long long)n, e.max, e.mean(), tol,
                pass ? "true" : "false");
    std::fflush(stdout);
    if (sessions > 0) {
      const ErrStats be = batched_err(cpu, gpu, so, n, sessions);
      pass = be.max <= tol;
      ok = ok && pass;
      std::printf("{\"check\":\"gpu_vs_cpu_batched\",\"model\":\"%s\",\"dtype\":\"%s\",\"policy\":\"%s\",\"cache\":%lld,"
                  "\"sessions\":%d,\"tokens\":%lld,\"max_abs_err\":%.3e,\"mean_abs_err\":%.3e,\"tolerance\":%.0e,\"pass\":%s}\n",
                  args[0].c_str(), gpu_dtype_name(dtype), p.policy, (long long)window, sessions, (long long)n, be.max, be.mean(), tol,
                  pass ? "true" : "false");
      std::fflush(stdout);
    }
  }
  return ok ? 0 : 1;
}

// Appends `ids` in chunks of `chunk`; log-probs of every token.
std::vector<float> feed(Engine& e, uint64_t s, const std::vector<int32_t>& ids, size_t chunk) {
  std::vector<float> out;
  for (size_t i = 0; i < ids.size(); i += chunk) {
    StepEntry en;
    en.session = s;
    en.tokens.assign(ids.begin() + long(i), ids.begin() + long(std::min(ids.size(), i + chunk)));
    en.logprobs = true;
    auto r = e.step({en}, false);
    out.insert(out.end(), r[0].token_logprobs.begin(), r[0].token_logprobs.end());
  }
  return out;
}

// An incremental export (Engine::export_session_since, kind 1): its ring
// slots and, per slot, the K/V floats of every layer; and its sink floats.
struct DeltaExport {
  std::vector<int32_t> slots;
  std::vector<float> sinks, values;
};

DeltaExport parse_delta(const std::vector<uint8_t>& d) {
  size_t at = 0;
  auto take = [&](void* out, size_t n) {
    if (at + n > d.size()) throw std::runtime_error("incremental export: truncated");
    std::memcpy(out, d.data() + at, n);
    at += n;
  };
  uint8_t kind = 0, with_sinks = 0;
  uint64_t n64 = 0;
  uint32_t n = 0;
  take(&kind, 1);
  if (kind != 1) throw std::runtime_error("incremental export: not a sink+window delta");
  take(&n64, 8);
  at += n64;  // the skeleton
  take(&with_sinks, 1);
  take(&n64, 8);
  DeltaExport out;
  out.sinks.resize(n64 / sizeof(float));
  take(out.sinks.data(), n64);
  take(&n, 4);
  out.slots.resize(n);
  take(out.slots.data(), size_t(n) * sizeof(int32_t));
  out.values.resize((d.size() - at) / sizeof(float));
  take(out.values.data(), out.values.size() * sizeof(float));
  return out;
}

int cmd_snapshot(std::vector<std::string> args) {
  GpuDtype dtype = parse_gpu_dtype(flag(args, "--dtype", "fp32"));
  if (args.empty()) throw std::runtime_error("snapshot <model dir>");
  Engine cpu(args[0], 8);
  Engine gpu(args[0], gpu_engine(dtype));
  const double tol = tolerance_for(dtype);
  bool ok = true;
  SessionOptions so;
  so.policy = Policy::Sinks;
  so.sinks = 4;
  so.window = 60;
  std::vector<int32_t> ids = random_ids(400, cpu.model().config().vocab_size, 11);
  std::vector<int32_t> head(ids.begin(), ids.begin() + 150), tail(ids.begin() + 150, ids.end());
  // Reference: the whole stream on each backend.
  uint64_t rc = cpu.open_session(so), rg = gpu.open_session(so);
  feed(cpu, rc, head, 16);
  feed(gpu, rg, head, 16);
  std::vector<float> ref_cpu = feed(cpu, rc, tail, 16), ref_gpu = feed(gpu, rg, tail, 16);
  // Moves: GPU -> CPU and CPU -> GPU after the head.
  uint64_t g1 = gpu.open_session(so), c1 = cpu.open_session(so);
  feed(gpu, g1, head, 16);
  feed(cpu, c1, head, 16);
  std::vector<uint8_t> from_gpu = gpu.export_session(g1), from_cpu = cpu.export_session(c1);
  uint64_t moved_to_cpu = cpu.import_session(from_gpu.data(), from_gpu.size());
  uint64_t moved_to_gpu = gpu.import_session(from_cpu.data(), from_cpu.size());
  std::vector<float> a = feed(cpu, moved_to_cpu, tail, 16), b = feed(gpu, moved_to_gpu, tail, 16);
  // A GPU session re-imported on the GPU continues as if never moved.
  uint64_t g2 = gpu.import_session(from_gpu.data(), from_gpu.size());
  std::vector<float> c = feed(gpu, g2, tail, 16);
  // Incremental exports, which download only the slots that go out: 40 more
  // tokens from 150 wrap the 60-slot ring (two runs of slots). The GPU's delta
  // must equal, bit for bit, the same slots of its whole-window delta, and
  // match the CPU's delta within tolerance; from token 2 the sinks go out too.
  std::vector<int32_t> more(tail.begin(), tail.begin() + 40);
  feed(gpu, g1, more, 16);
  feed(cpu, c1, more, 16);
  const DeltaExport dg = parse_delta(gpu.export_session_since(g1, 150)), dc = parse_delta(cpu.export_session_since(c1, 150));
  const DeltaExport ag = parse_delta(gpu.export_session_since(g1, 2)), ac = parse_delta(cpu.export_session_since(c1, 2));
  const size_t per_slot = dg.slots.empty() ? 0 : dg.values.size() / dg.slots.size();
  double partial_vs_whole = dg.slots.size() == 40 && dg.slots == dc.slots && !ag.sinks.empty() ? 0.0 : INFINITY;
  for (size_t i = 0; i < dg.slots.size() && std::isfinite(partial_vs_whole); ++i) {
    const size_t j = size_t(dg.slots[i]);  // ag holds every ring slot, in order
    if ((j + 1) * per_slot > ag.values.size()) {
      partial_vs_whole = INFINITY;
      break;
    }
    for (size_t k = 0; k < per_slot; ++k)
      partial_vs_whole = std::max(partial_vs_whole, double(std::fabs(dg.values[i * per_slot + k] - ag.values[j * per_slot + k])));
  }
  const bool same_sizes = dg.values.size() == dc.values.size() && ag.values.size() == ac.values.size() &&
                          ag.sinks.size() == ac.sinks.size() && ag.slots == ac.slots;
  const double delta_vs_cpu = same_sizes ? std::max({max_abs_diff(dg.values, dc.values, 0), max_abs_diff(ag.values, ac.values, 0),
                                                     max_abs_diff(ag.sinks, ac.sinks, 0)})
                                         : INFINITY;
  struct R {
    const char* what;
    double err;
    double tol;
  } rs[] = {{"gpu_to_cpu_vs_cpu", max_abs_diff(a, ref_cpu, 0), tol},
            {"cpu_to_gpu_vs_gpu", max_abs_diff(b, ref_gpu, 0), tol},
            {"gpu_to_gpu_vs_gpu", max_abs_diff(c, ref_gpu, 0), tol},
            {"gpu_delta_slots_vs_whole_window", partial_vs_whole, 0.0},
            {"gpu_delta_vs_cpu_delta", delta_vs_cpu, tol}};
  for (const R& r : rs) {
    bool pass = r.err <= r.tol;
    ok = ok && pass;
    std::printf("{\"check\":\"snapshot\",\"dtype\":\"%s\",\"move\":\"%s\",\"snapshot_bytes\":%zu,\"max_abs_err\":%.3e,"
                "\"tolerance\":%.0e,\"pass\":%s}\n",
                gpu_dtype_name(dtype), r.what, from_gpu.size(), r.err, r.tol, pass ? "true" : "false");
  }
  std::fflush(stdout);
  return ok ? 0 : 1;
}

// The next token chosen on the device (StepEntry::next_distribution =
// false) against the same step's whole distribution copied to the host
// (both computed on the device since ForwardSequence::logprobs; in fp32 the
// first pair's last distribution is also checked against the CPU engine's,
// taken on the host, within 1e-4). Twin sessions,
// one of each pair in each mode, see the same tokens in the same steps
// (identical rows of one batched forward): a prefill chunk, then decode steps
// (replayed graphs), with `sinks`, `dense` (its cache grows and moves) and
// per-token log-probs on one (whose logits come to the host). Per step: the
// same token (unless the copied distribution's top two are within 1e-5), its
// log-prob within 1e-4; the distribution fetched later (Engine::sync_next,
// by an export) within 1e-4 of the twin's.
int cmd_next(std::vector<std::string> args) {
  GpuDtype dtype = parse_gpu_dtype(flag(args, "--dtype", "bf16"));
  if (args.empty()) throw std::runtime_error("next <model dir>");
  Engine gpu(args[0], gpu_engine(dtype));
  const int64_t V = gpu.model().config().vocab_size;
  std::vector<int32_t> ids = random_ids(200, int32_t(V), 17);
  struct Pair {
    uint64_t full, lean;
    bool logprobs;
  };
  auto options = [](int k) {
    SessionOptions so;
    so.policy = k == 3 ? Policy::Dense : Policy::Sinks;
    so.sinks = 4;
    so.window = 24 + 8 * k;
    so.sink_token = -1;
    return so;
  };
  std::vector<Pair> pairs;
  for (int k = 0; k < 4; ++k) pairs.push_back({gpu.open_session(options(k)), gpu.open_session(options(k)), k == 1});
  double token_err = 0, dist_err = 0;
  int64_t mismatched = 0, ties = 0, steps = 0;
  auto run = [&](size_t begin, size_t count) {
    std::vector<StepEntry> entries;
    for (size_t k = 0; k < pairs.size(); ++k) {
      const size_t b = begin + 7 * k;  // each pair its own tokens
      std::vector<int32_t> t(ids.begin() + b, ids.begin() + b + count);
      entries.push_back({pairs[k].full, t, pairs[k].logprobs, true});
      entries.push_back({pairs[k].lean, t, pairs[k].logprobs, false});
    }
    std::vector<StepOutput> out = gpu.step(entries, true);
    ++steps;
    for (size_t k = 0; k < pairs.size(); ++k) {
      const StepOutput &f = out[2 * k], &l = out[2 * k + 1];
      if (!l.next_logprobs.empty() || f.next_logprobs.size() != size_t(V)) throw std::runtime_error("next: wrong outputs returned");
      std::vector<float> sorted(f.next_logprobs);
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      if (l.next_token != f.next_token) {
        if (sorted[0] - sorted[1] <= 1e-5f) ++ties;
        else ++mismatched;
      }
      token_err = std::max(token_err, double(std::fabs(l.next_token_logprob - sorted[0])));
      if (pairs[k].logprobs)  // the stream's first token has none (NaN)
        token_err = std::max(token_err, l.token_logprobs.size() == count ? max_abs_diff(l.token_logprobs, f.token_logprobs, begin == 0 ? 1 : 0) : INFINITY);
    }
  };
  run(0, 40);                                        // prefill chunk
  for (size_t i = 40; i < 70; ++i) run(i, 1);        // decode steps
  double cpu_err = 0;
  if (dtype == GpuDtype::FP32) {  // pair 0's tokens through the CPU engine
    Engine cpu(args[0], 8);
    const uint64_t c = cpu.open_session(options(0));
    cpu.step({{c, std::vector<int32_t>(ids.begin(), ids.begin() + 40), false, true}}, true);
    std::vector<StepOutput> o;
    for (size_t i = 40; i < 70; ++i) o = cpu.step({{c, {ids[i]}, false, true}}, true);
    std::vector<StepOutput> g = gpu.step({{pairs[0].full, {}, false, true}}, true);
    cpu_err = o[0].next_logprobs.size() == size_t(V) ? max_abs_diff(g[0].next_logprobs, o[0].next_logprobs, 0) : INFINITY;
  }
  for (size_t k = 0; k < pairs.size(); ++k) {        // the kept distribution, via an export
    gpu.export_session(pairs[k].lean);
    std::vector<StepOutput> o = gpu.step({{pairs[k].full, {}, false, true}, {pairs[k].lean, {}, false, true}}, true);
    dist_err = std::max(dist_err, o[1].next_logprobs.size() == size_t(V) ? max_abs_diff(o[1].next_logprobs, o[0].next_logprobs, 0) : INFINITY);
  }
  const bool pass = mismatched == 0 && token_err <= 1e-4 && dist_err <= 1e-4 && cpu_err <= 1e-4;
  std::printf("{\"check\":\"next_token\",\"dtype\":\"%s\",\"steps\":%lld,\"sessions\":%zu,\"token_mismatches\":%lld,"
              "\"near_ties\":%lld,\"max_logprob_err\":%.3e,\"max_distribution_err\":%.3e,\"cpu_distribution_err\":%.3e,"
              "\"tolerance\":1e-04,\"pass\":%s}\n",
              gpu_dtype_name(dtype), (long long)steps, 2 * pairs.size(), (long long)mismatched, (long long)ties, token_err,
              dist_err, cpu_err, pass ? "true" : "false");
  std::fflush(stdout);
  return pass ? 0 : 1;
}

size_t device_used() {
  size_t free = 0, total = 0;
  cudaMemGetInfo(&free, &total);
  return total - free;
}

// One real sinks stream of N tokens on the GPU: ingest in chunks, then time
// single-token decode steps at ~4K and at the end.
int cmd_stream(std::vector<std::string> args) {
  GpuDtype dtype = parse_gpu_dtype(flag(args, "--dtype", "bf16"));
  const int64_t total = std::stoll(flag(args, "--tokens", "1048576"));
  const int64_t chunk = std::stoll(flag(args, "--chunk", "1024"));
  if (args.empty()) throw std::runtime_error("stream <model dir> --tokens N");
  Engine gpu(args[0], gpu_engine(dtype));
  SessionOptions so;  // sinks 4 + 1020
  uint64_t s = gpu.open_session(so);
  const int vocab = gpu.model().config().vocab_size;
  std::mt19937_64 rng(3);
  auto decode = [&](int steps) {
    StepEntry en;
    en.session = s;
    auto t0 = Clock::now();
    for (int i = 0; i < steps; ++i) {
      en.tokens = {int32_t(rng() % uint64_t(vocab))};
      gpu.step({en}, true);
    }
    return seconds_since(t0) * 1e3 / steps;
  };
  auto ingest = [&](int64_t upto) {
    std::vector<int32_t> buf;
    while (int64_t(gpu.session_info(s).tokens_seen) < upto) {
      int64_t n = std::min(chunk, upto - int64_t(gpu.session_info(s).tokens_seen));
      buf.resize(size_t(n));
      for (auto& t : buf) t = int32_t(rng() % uint64_t(vocab));
      StepEntry en;
      en.session = s;
      en.tokens = buf;
      gpu.step({en}, false);
    }
  };
  ingest(4000);
  decode(20);
  double early = decode(200);
  size_t mem_early = device_used();
  auto t0 = Clock::now();
  ingest(total);
  double ingest_s = seconds_since(t0);
  decode(20);
  double late = decode(200);
  size_t mem_late = device_used();
  std::printf("{\"bench\":\"stream\",\"model\":\"%s\",\"dtype\":\"%s\",\"cache\":\"4+1020\",\"tokens\":%llu,"
              "\"ingest_s\":%.2f,\"ingest_tokens_per_s\":%.0f,\"decode_ms_at_4k\":%.4f,\"decode_ms_at_end\":%.4f,"
              "\"latency_ratio\":%.4f,\"device_bytes_at_4k\":%zu,\"device_bytes_at_end\":%zu}\n",
              args[0].c_str(), gpu_dtype_name(dtype), (unsigned long long)gpu.session_info(s).tokens_seen, ingest_s,
              double(total) / ingest_s, early, late, late / early, mem_early, mem_late);
  return 0;
}

// Per-token NLL of a long token stream (uint16 ids, e.g. a tokenized held-out
// split) under one policy on the GPU: like `streamsink score`, for streams
// too long for the CPU. Prints mean NLL / perplexity overall and per tenth.
int cmd_score(std::vector<std::string> args) {
  GpuDtype dtype = parse_gpu_dtype(flag(args, "--dtype", "fp32"));
  const int64_t limit = std::stoll(flag(args, "--tokens", "1048576"));
  const size_t chunk = size_t(std::stoll(flag(args, "--chunk", "256")));
  const std::string policy = flag(args, "--policy", "sinks");
  const int64_t sinks = std::stoll(flag(args, "--sinks", "4"));
  const int64_t window = std::stoll(flag(args, "--window", "252"));
  const bool sink_token = has_flag(args, "--sink-token");
  if (args.size() < 2) throw std::runtime_error("score <model dir> <ids.u16> [--policy P --sinks S --window W --tokens N]");
  std::string raw = read_file(args[1]);
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < raw.size() && int64_t(ids.size()) < limit; i += 2)
    ids.push_back(int32_t(uint8_t(raw[i]) | (uint16_t(uint8_t(raw[i + 1])) << 8)));
  // Shorter files are streamed again from the start until `limit` tokens.
  const size_t base = ids.size();
  while (int64_t(ids.size()) < limit && base > 0) ids.push_back(ids[ids.size() - base]);
  Engine gpu(args[0], gpu_engine(dtype));
  SessionOptions so;
  so.policy = policy_of(policy);
  so.sinks = so.policy == Policy::Sinks ? sinks : 0;
  so.window = window;
  if (sink_token) {
    so.sink_token = gpu.model().config().sink_token_id;
    if (so.sink_token < 0) throw std::runtime_error("--sink-token: the model declares no sink token");
  }
  if (so.policy == Policy::Dense) so.max_dense_tokens = int64_t(ids.size()) + 8;
  auto t0 = Clock::now();
  std::vector<float> lp = feed(gpu, gpu.open_session(so), ids, chunk);
  const double secs = seconds_since(t0);
  double total = 0;
  int64_t n = 0;
  std::vector<double> tenth(10, 0.0);
  std::vector<int64_t> tenth_n(10, 0);
  for (size_t i = 1; i < lp.size(); ++i) {
    total -= lp[i];
    ++n;
    size_t b = std::min<size_t>(9, i * 10 / lp.size());
    tenth[b] -= lp[i];
    ++tenth_n[b];
  }
  std::printf("{\"score\":\"%s\",\"model\":\"%s\",\"dtype\":\"%s\",\"policy\":\"%s\",\"sinks\":%lld,\"window\":%lld,"
              "\"sink_token\":%d,\"tokens\":%zu,\"file_tokens\":%zu,\"mean_nll\":%.5f,\"perplexity\":%.4f,\"seconds\":%.1f,\"ppl_by_tenth\":[",
              args[1].c_str(), args[0].c_str(), gpu_dtype_name(dtype), policy.c_str(), (long long)so.sinks,
              (long long)so.window, so.sink_token, ids.size(), base, total / double(n), std::exp(total / double(n)), secs);
  for (int b = 0; b < 10; ++b) std::printf("%s%.4f", b ? "," : "", std::exp(tenth[b] / double(std::max<int64_t>(1, tenth_n[b]))));
  std::printf("]}\n");
  std::fflush(stdout);
  return 0;
}

// ---- benchmarks on random weights of real shapes ----------------------------

ModelConfig shape_config(const std::string& shape) {
  int kv = 32, inter = 11008;
  if (shape == "mistral-7b") {
    kv = 8;
    inter = 14336;
  } else if (shape != "llama2-7b") {
    throw std::runtime_error("shape must be llama2-7b or mistral-7b");
  }
  std::string json = "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":4096,"
                     "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":" + std::to_string(kv) +
                     ",\"intermediate_size\":" + std::to_string(inter) +
                     ",\"vocab_size\":32000,\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,"
                     "\"hidden_act\":\"silu\",\"tie_word_embeddings\":false}";
  return parse_model_config(json, shape);
}

// Bytes one decode step must move: every weight matrix once (the embedding
// table only for the looked-up rows) plus each session's visible cache.
double step_bytes(const ModelConfig& c, size_t elem, int64_t batch, int64_t visible) {
  const double H = c.hidden, I = c.intermediate, V = c.vocab_size;
  const double per_layer = double(c.qkv_dim()) * H + H * double(c.heads) * c.head_dim + 2 * I * H + I * H;
  const double weights = (per_layer * c.layers + V * H + double(batch) * H) * double(elem);
  const double cache = double(batch) * double(visible) * double(c.layers) * 2.0 * c.kv_heads * c.head_dim * double(elem);
  return weights + cache;
}

// Device-to-device copy bandwidth (bytes read + written per second).
double copy_bandwidth() {
  const size_t bytes = size_t(2) << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) throw std::runtime_error("bandwidth buffers");
  cudaMemset(a, 1, bytes);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  for (int i = 0; i < 3; ++i) cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
  const int reps = 10;
  cudaEventRecord(e0);
  for (int i = 0; i < reps; ++i) cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice);
  cudaEventRecord(e1);
  cudaEventSynchronize(e1);
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * double(bytes) * reps / (double(ms) / 1e3);
}

struct Sessions {
  std::vector<std::unique_ptr<KvCache>> caches;
};

// B sessions of a sinks cache S+W, each filled by a real prefill of S+W tokens.
Sessions make_sessions(GpuBackend& g, const ModelConfig& c, int64_t batch, int64_t sinks, int64_t window) {
  Sessions s;
  CacheShape shape{Policy::Sinks, sinks, window};
  std::vector<int32_t> ids = random_ids(sinks + window, c.vocab_size, 5);
  std::vector<float> logits(size_t(c.vocab_size));
  for (int64_t b = 0; b < batch; ++b) {
    auto cache = std::make_unique<KvCache>(shape, c.layers, c.kv_heads, c.head_dim, false, false);
    g.attach(*cache);
    std::vector<ForwardSequence> seq(1);
    seq[0].cache = cache.get();
    seq[0].tokens = ids.data();
    seq[0].count = int64_t(ids.size());
    seq[0].logits = logits.data();
    g.forward(seq);
    s.caches.push_back(std::move(cache));
  }
  return s;
}

// ms per decode step of all sessions together. `distribution`: every
// session's log-probs come to the host (a sampling decode); else only each
// session's next token (a greedy decode: the engine's StepEntry::
// next_distribution = false).
// cudart's profiler control (cuda_profiler_api.h is not in every toolkit
// packaging, the symbols are).
extern "C" cudaError_t cudaProfilerStart(void);
extern "C" cudaError_t cudaProfilerStop(void);

double time_decode(GpuBackend& g, Sessions& s, int vocab, int steps, bool distribution = false) {
  std::vector<ForwardSequence> seqs(s.caches.size());
  std::vector<int32_t> toks(s.caches.size()), next(s.caches.size());
  std::vector<float> logits(distribution ? s.caches.size() * size_t(vocab) : 0), next_lp(s.caches.size());
  std::mt19937_64 rng(9);
  auto run = [&](int n) {
    for (int i = 0; i < n; ++i) {
      for (size_t b = 0; b < seqs.size(); ++b) {
        toks[b] = int32_t(rng() % uint64_t(vocab));
        seqs[b].cache = s.caches[b].get();
        seqs[b].tokens = &toks[b];
        seqs[b].count = 1;
        seqs[b].logits = distribution ? &logits[b * size_t(vocab)] : nullptr;
        seqs[b].logprobs = distribution;  // as the engine asks: log-softmax on the device
        seqs[b].next_token = &next[b];
        seqs[b].next_logprob = &next_lp[b];
      }
      g.forward(seqs);
    }
  };
  run(3);
  if (std::getenv("STREAMSINK_PROFILE_STEP")) {
    // One step between profiler start/stop, for `ncu --profile-from-start off`
    // (tools/cuda/ncu_breakdown.py).
    cudaProfilerStart();
    run(1);
    cudaProfilerStop();
  }
  g.take_step_device_ms();  // from here on (STREAMSINK_STEP_TIMING)
  auto t0 = Clock::now();
  run(steps);
  return seconds_since(t0) * 1e3 / steps;
}

// ms of one recompute-baseline token: a forward over the last W tokens into a throwaway cache.
double time_recompute(GpuBackend& g, const ModelConfig& c, int64_t window, int reps) {
  std::vector<int32_t> ids = random_ids(window, c.vocab_size, 13);
  int32_t next = 0;  // the next token only, as time_decode's greedy steps
  float next_lp = 0;
  auto run = [&](int n) {
    for (int i = 0; i < n; ++i) {
      KvCache scratch(CacheShape{Policy::Dense, 0, 0}, c.layers, c.kv_heads, c.head_dim, true, false);
      std::vector<ForwardSequence> seq(1);
      seq[0].cache = &scratch;
      seq[0].discard_kv = true;
      seq[0].tokens = ids.data();
      seq[0].count = window;
      seq[0].next_token = &next;
      seq[0].next_logprob = &next_lp;
      g.forward(seq);
    }
  };
  run(2);
  auto t0 = Clock::now();
  run(reps);
  return seconds_since(t0) * 1e3 / reps;
}

int cmd_bench(std::vector<std::string> args) {
  const std::string out_path = flag(args, "--out", "");
  const bool quick = has_flag(args, "--quick");
  const std::string sections = flag(args, "--sections", "decode,position,recompute");
  const std::string shapes = flag(args, "--shapes", "llama2-7b,mistral-7b");
  const bool max_batch = !has_flag(args, "--no-max-batch");
  const bool graphs = !has_flag(args, "--no-graphs");
  auto want = [](const std::string& list, const std::string& item) { return ("," + list + ",").find("," + item + ",") != std::string::npos; };
  const int steps = quick ? 8 : 32;
  std::ostringstream js;
  js << "{\n";
  GpuOptions opts;
  opts.dtype = GpuDtype::BF16;
  opts.graphs = graphs;
  const double bw = copy_bandwidth();
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  js << "  \"gpu\": \"" << prop.name << "\",\n  \"dtype\": \"bf16\",\n  \"cuda_graphs\": " << (graphs ? "true" : "false")
     << ",\n  \"copy_bandwidth_bytes_per_s\": " << bw << ",\n";
  std::fprintf(stderr, "%s: device-to-device copy %.0f GB/s\n", prop.name, bw / 1e9);
  const int64_t S = 4, W = 2044;
  js << "  \"decode\": [\n";
  bool first = true;
  for (std::string shape : {"llama2-7b", "mistral-7b"}) {
    if (!want(sections, "decode") || !want(shapes, shape)) continue;
    ModelConfig c = shape_config(shape);
    auto g = create_random_gpu_backend(c, opts, 1);
    std::vector<int64_t> batches;
    {
      std::istringstream list(flag(args, "--batches", "1,8,32"));
      for (std::string b; std::getline(list, b, ',');) batches.push_back(std::stoll(b));
    }
    if (shape == "mistral-7b" && max_batch) {
      size_t free = 0, total = 0;
      cudaMemGetInfo(&free, &total);
      const double per_session = double(g->slot_bytes()) * double(S + W);
      const size_t reserve = size_t(6) << 30;  // workspace for prefill and decode
      batches.push_back(int64_t(double(free - reserve) / per_session));
    }
    for (int64_t B : batches) {
      Sessions s = make_sessions(*g, c, B, S, W);
      // A greedy step (the next token comes back), then the same with every
      // session's logits copied to the host (a sampling step).
      double ms = time_decode(*g, s, c.vocab_size, steps);
      const double device_ms = g->take_step_device_ms();  // STREAMSINK_STEP_TIMING=1
      double ms_dist = time_decode(*g, s, c.vocab_size, steps, true);
      const double device_ms_dist = g->take_step_device_ms();
      if (device_ms > 0)
        std::fprintf(stderr, "decode %s batch %lld: device time %.3f ms/step (host %.3f), logits to host %.3f (host %.3f)\n",
                     shape.c_str(), (long long)B, device_ms, ms - device_ms, device_ms_dist, ms_dist - device_ms_dist);
      double bytes = step_bytes(c, 2, B, S + W);
      double roofline_ms = bytes / bw * 1e3;
      js << (first ? "" : ",\n") << "    {\"shape\": \"" << shape << "\", \"batch\": " << B << ", \"cache\": \"4+2044\", \"ms_per_step\": " << ms
         << ", \"tokens_per_s\": " << double(B) * 1e3 / ms << ", \"bytes_per_step\": " << bytes
         << ", \"roofline_ms\": " << roofline_ms << ", \"fraction_of_roofline\": " << roofline_ms / ms
         << ", \"logits_to_host\": {\"ms_per_step\": " << ms_dist << ", \"fraction_of_roofline\": " << roofline_ms / ms_dist << "}}";
      first = false;
      std::fprintf(stderr, "decode %s batch %lld: %.3f ms/step, %.0f tok/s, %.1f%% of roofline (%.3f ms); logits to host %.3f ms, %.1f%%\n",
                   shape.c_str(), (long long)B, ms, double(B) * 1e3 / ms, 100 * roofline_ms / ms, roofline_ms, ms_dist,
                   100 * roofline_ms / ms_dist);
    }
  }
  js << "\n  ],\n";

  // Llama-2-7B shape, batch 1: position flatness and sinks vs recompute.
  ModelConfig c = shape_config("llama2-7b");
  auto g = create_random_gpu_backend(c, opts, 2);
  if (want(sections, "position")) {
    Sessions s = make_sessions(*g, c, 1, S, W);
    size_t mem0 = device_used();
    double at4k = 0, at1m = 0;
    s.caches[0]->set_tokens(4096);
    at4k = time_decode(*g, s, c.vocab_size, steps);
    size_t mem4k = device_used();
    s.caches[0]->set_tokens(int64_t(1) << 20);
    at1m = time_decode(*g, s, c.vocab_size, steps);
    size_t mem1m = device_used();
    js << "  \"position\": {\"shape\": \"llama2-7b\", \"cache\": \"4+2044\", \"ms_at_4096\": " << at4k << ", \"ms_at_1048576\": " << at1m
       << ", \"ratio\": " << at1m / at4k << ", \"device_bytes_at_4096\": " << mem4k << ", \"device_bytes_at_1048576\": " << mem1m
       << ", \"device_bytes_before\": " << mem0 << "},\n";
    std::fprintf(stderr, "position: %.3f ms at 4096, %.3f ms at 2^20 (x%.4f); memory %zu -> %zu bytes\n", at4k, at1m, at1m / at4k,
                 mem4k, mem1m);
  }
  js << "  \"sinks_vs_recompute\": [\n";
  first = true;
  for (int64_t cache : {256, 512, 1024, 2048, 4096}) {
    if (!want(sections, "recompute")) break;
    Sessions s = make_sessions(*g, c, 1, S, cache - S);
    double sinks_ms = time_decode(*g, s, c.vocab_size, steps);
    double rec_ms = time_recompute(*g, c, cache, quick ? 3 : 8);
    js << (first ? "" : ",\n") << "    {\"cache\": " << cache << ", \"sinks_ms\": " << sinks_ms << ", \"recompute_ms\": " << rec_ms
       << ", \"speedup\": " << rec_ms / sinks_ms << "}";
    first = false;
    std::fprintf(stderr, "cache %lld: sinks %.3f ms, recompute %.3f ms, x%.1f\n", (long long)cache, sinks_ms, rec_ms, rec_ms / sinks_ms);
  }
  js << "\n  ]\n}\n";
  std::printf("%s", js.str().c_str());
  if (!out_path.empty()) {
    std::ofstream f(out_path);
    f << js.str();
  }
  return 0;
}

int cmd_info() {
  std::printf("{\"cuda_compiled\":%s,\"devices\":%d}\n", cuda_compiled() ? "true" : "false", cuda_device_count());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::fprintf(stderr, "usage: streamsink_gpu info|parity|versus|snapshot|next|stream|bench ...\n");
    return 2;
  }
  std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "info") return cmd_info();
    if (cmd == "parity") return cmd_parity(args);
    if (cmd == "versus") return cmd_versus(args);
    if (cmd == "snapshot") return cmd_snapshot(args);
    if (cmd == "next") return cmd_next(args);
    if (cmd == "stream") return cmd_stream(args);
    if (cmd == "score") return cmd_score(args);
    if (cmd == "bench") return cmd_bench(args);
    std::fprintf(stderr, "unknown command %s\n", cmd.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "streamsink_gpu %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
