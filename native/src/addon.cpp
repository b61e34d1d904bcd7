// The Node-API boundary. Exports:
//   loadModel(dir, {threads, backend}) -> Promise<NativeModel>
//   backendInfo() -> {cuda: boolean, cudaDevices: number}
// NativeModel runs one engine call at a time: `step` runs on the libuv pool
// (AsyncWorker) and keeps its JS owner referenced until it settles; the other
// methods are quick and synchronous, and fail with E_BUSY while a step runs.
// Every C++ error reaches JS as an Error whose `code` is the engine's code.
#include <napi.h>

#include <atomic>
#include <thread>
#include <cmath>
#include <memory>

#include "cuda/cuda_backend.h"
#include "engine.h"
#include "errors.h"

namespace streamsink {

namespace {

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Value().Set("code", Napi::String::New(env, code));
  return err;
}

struct CapturedError {
  std::string code, message;
  void capture() {
    try {
      throw;
    } catch (const EngineError& e) {
      code = error_code_name(e.code());
      message = e.what();
    } catch (const std::bad_alloc&) {
      code = "E_OUT_OF_MEMORY";
      message = "out of memory";
    } catch (const std::exception& e) {
      code = "E_INTERNAL";
      message = e.what();
    }
  }
};

[[noreturn]] void throw_js(Napi::Env env, const CapturedError& e) { throw make_error(env, e.code, e.message); }

template <typename Fn>
auto guarded(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    CapturedError e;
    e.capture();
    throw_js(env, e);
  }
}

int64_t int_option(const Napi::Object& o, const char* key, int64_t fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsNumber()) throw EngineError(ErrorCode::InvalidArgument, std::string(key) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d)) throw EngineError(ErrorCode::InvalidArgument, std::string(key) + " must be an integer");
  return int64_t(d);
}

}  // namespace

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::FunctionReference constructor;

  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function cls = DefineClass(env, "NativeModel",
                                     {InstanceMethod("info", &NativeModel::Info),
                                      InstanceMethod("openSession", &NativeModel::OpenSession),
                                      InstanceMethod("closeSession", &NativeModel::CloseSession),
                                      InstanceMethod("sessionInfo", &NativeModel::GetSessionInfo),
                                      InstanceMethod("step", &NativeModel::Step),
                                      InstanceMethod("exportSession", &NativeModel::ExportSession),
                                      InstanceMethod("exportSessionSince", &NativeModel::ExportSessionSince),
                                      InstanceMethod("importSession", &NativeModel::ImportSession),
                                      InstanceMethod("dispose", &NativeModel::Dispose)});
    constructor = Napi::Persistent(cls);
    constructor.SuppressDestruct();
    exports.Set("NativeModel", cls);
  }

  NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw make_error(info.Env(), "E_INVALID_ARGUMENT", "NativeModel is created by loadModel()");
    engine_.reset(info[0].As<Napi::External<Engine>>().Data());
  }

  Engine& engine(Napi::Env env) {
    if (!engine_) throw make_error(env, "E_DISPOSED", "model has been disposed");
    if (busy_) throw make_error(env, "E_BUSY", "a step is running on this model");
    return *engine_;
  }

  void set_busy(bool b) { busy_ = b; }

 private:
  class StepWorker;

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!engine_) throw make_error(env, "E_DISPOSED", "model has been disposed");
    const Model& m = engine_->model();
    const ModelConfig& c = m.config();
    Napi::Object o = Napi::Object::New(env);
    o.Set("architecture", c.architecture_name);
    o.Set("vocabSize", c.vocab_size);
    o.Set("hiddenSize", c.hidden);
    o.Set("layers", c.layers);
    o.Set("heads", c.heads);
    o.Set("kvHeads", c.kv_heads);
    o.Set("headDim", c.head_dim);
    o.Set("maxPositions", c.max_positions);
    o.Set("positionEncoding", c.position == PositionKind::Rotary ? "rotary" : "alibi");
    o.Set("parameters", double(m.parameter_count()));
    char hash[17];
    snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(m.model_hash()));
    o.Set("modelHash", hash);
    o.Set("sinkTokenId", c.sink_token_id);
    o.Set("backend", engine_->backend());
    if (const GpuBackend* g = engine_->gpu()) {
      o.Set("device", g->device_name());
      o.Set("dtype", gpu_dtype_name(g->dtype()));
    }
    o.Set("threads", m.threads());
    return o;
  }

  Napi::Value OpenSession(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&] {
      Engine& e = engine(env);
      if (info.Length() < 1 || !info[0].IsObject()) throw EngineError(ErrorCode::InvalidArgument, "openSession expects an options object");
      Napi::Object o = info[0].As<Napi::Object>();
      SessionOptions so;
      Napi::Value policy = o.Get("policy");
      if (!policy.IsString()) throw EngineError(ErrorCode::InvalidArgument, "policy must be a string");
      so.policy = parse_policy(policy.As<Napi::String>().Utf8Value());
      so.sinks = int_option(o, "sinks", so.sinks);
      so.window = int_option(o, "window", so.window);
      so.sink_token = int32_t(int_option(o, "sinkToken", -1));
      so.max_dense_tokens = int_option(o, "maxDenseTokens", so.max_dense_tokens);
      return Napi::Number::New(env, double(e.open_session(so)));
    });
  }

  static uint64_t session_arg(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber()) throw EngineError(ErrorCode::InvalidArgument, "session id must be a number");
    return uint64_t(info[0].As<Napi::Number>().Int64Value());
  }

  Napi::Value CloseSession(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    guarded(env, [&] {
      engine(env).close_session(session_arg(info));
      return 0;
    });
    return env.Undefined();
  }

  Napi::Value GetSessionInfo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&] {
      SessionInfo si = engine(env).session_info(session_arg(info));
      Napi::Object o = Napi::Object::New(env);
      o.Set("policy", policy_name(si.policy));
      o.Set("sinks", double(si.sinks));
      o.Set("window", double(si.window));
      o.Set("cacheFill", double(si.cache_fill));
      o.Set("capacity", double(si.capacity));
      o.Set("tokensSeen", double(si.tokens_seen));
      o.Set("sinkToken", si.sink_token);
      return o;
    });
  }

  Napi::Value ExportSession(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&] {
      std::vector<uint8_t> bytes = engine(env).export_session(session_arg(info));
      return Napi::Buffer<uint8_t>::Copy(env, bytes.data(), bytes.size());
    });
  }

  // exportSessionSince(session, fromTokens): see Engine::export_session_since.
  Napi::Value ExportSessionSince(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&] {
      if (info.Length() < 2 || !info[1].IsNumber()) throw EngineError(ErrorCode::InvalidArgument, "exportSessionSince expects (session, fromTokens)");
      std::vector<uint8_t> bytes = engine(env).export_session_since(session_arg(info), info[1].As<Napi::Number>().Int64Value());
      return Napi::Buffer<uint8_t>::Copy(env, bytes.data(), bytes.size());
    });
  }

  Napi::Value ImportSession(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guarded(env, [&] {
      Engine& e = engine(env);
      if (info.Length() < 1 || !info[0].IsTypedArray()) throw EngineError(ErrorCode::InvalidArgument, "importSession expects a Uint8Array");
      Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
      return Napi::Number::New(env, double(e.import_session(a.Data(), a.ByteLength())));
    });
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (busy_) throw make_error(env, "E_BUSY", "cannot dispose while a step is running");
    engine_.reset();
    return env.Undefined();
  }

  Napi::Value Step(const Napi::CallbackInfo& info);

  std::unique_ptr<Engine> engine_;
  bool busy_ = false;
};

Napi::FunctionReference NativeModel::constructor;

class NativeModel::StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Object owner, NativeModel* model, std::vector<StepEntry> entries, bool return_next)
      : Napi::AsyncWorker(owner.Env(), "streamsink.step"),
        owner_(Napi::Persistent(owner)),
        deferred_(Napi::Promise::Deferred::New(owner.Env())),
        model_(model),
        entries_(std::move(entries)),
        return_next_(return_next) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      outputs_ = model_->engine_->step(entries_, return_next_);
    } catch (...) {
      failed_ = true;
      error_.capture();
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    model_->set_busy(false);
    if (failed_) {
      deferred_.Reject(make_error(env, error_.code, error_.message).Value());
      return;
    }
    Napi::Array out = Napi::Array::New(env, outputs_.size());
    for (size_t i = 0; i < outputs_.size(); ++i) {
      Napi::Object o = Napi::Object::New(env);
      if (entries_[i].logprobs) {
        auto& lp = outputs_[i].token_logprobs;
        Napi::Float32Array a = Napi::Float32Array::New(env, lp.size());
        std::copy(lp.begin(), lp.end(), a.Data());
        o.Set("tokenLogprobs", a);
      }
      if (outputs_[i].next_token >= 0) {
        o.Set("nextToken", Napi::Number::New(env, outputs_[i].next_token));
        o.Set("nextTokenLogprob", Napi::Number::New(env, outputs_[i].next_token_logprob));
      }
      if (!outputs_[i].next_logprobs.empty()) {
        auto& nx = outputs_[i].next_logprobs;
        Napi::Float32Array a = Napi::Float32Array::New(env, nx.size());
        std::copy(nx.begin(), nx.end(), a.Data());
        o.Set("nextLogprobs", a);
      }
      out.Set(uint32_t(i), o);
    }
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override {
    model_->set_busy(false);
    deferred_.Reject(e.Value());
  }

 private:
  Napi::ObjectReference owner_;  // keeps the JS model alive while the step runs
  Napi::Promise::Deferred deferred_;
  NativeModel* model_;
  std::vector<StepEntry> entries_;
  std::vector<StepOutput> outputs_;
  bool return_next_;
  bool failed_ = false;
  CapturedError error_;
};

Napi::Value NativeModel::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    engine(env);
    if (info.Length() < 1 || !info[0].IsArray()) throw EngineError(ErrorCode::InvalidArgument, "step expects an array of entries");
    Napi::Array arr = info[0].As<Napi::Array>();
    bool return_next = info.Length() > 1 && info[1].ToBoolean().Value();
    std::vector<StepEntry> entries(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      Napi::Value v = arr.Get(i);
      if (!v.IsObject()) throw EngineError(ErrorCode::InvalidArgument, "step entry " + std::to_string(i) + " is not an object");
      Napi::Object o = v.As<Napi::Object>();
      Napi::Value sess = o.Get("session");
      if (!sess.IsNumber()) throw EngineError(ErrorCode::InvalidArgument, "step entry " + std::to_string(i) + ": session must be a number");
      entries[i].session = uint64_t(sess.As<Napi::Number>().Int64Value());
      Napi::Value toks = o.Get("tokens");
      if (!toks.IsTypedArray() || toks.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        throw EngineError(ErrorCode::InvalidArgument, "step entry " + std::to_string(i) + ": tokens must be an Int32Array");
      Napi::Int32Array ta = toks.As<Napi::Int32Array>();
      entries[i].tokens.assign(ta.Data(), ta.Data() + ta.ElementLength());
      entries[i].logprobs = o.Get("logprobs").ToBoolean().Value();
      // nextDistribution: false returns the next token only (absent: true).
      Napi::Value dist = o.Get("nextDistribution");
      entries[i].next_distribution = dist.IsUndefined() || dist.ToBoolean().Value();
    }
    auto* worker = new StepWorker(info.This().As<Napi::Object>(), this, std::move(entries), return_next);
    Napi::Promise p = worker->promise();
    busy_ = true;
    worker->Queue();
    return p;
  });
}

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, std::string dir, EngineOptions options)
      : Napi::AsyncWorker(env, "streamsink.load"), deferred_(Napi::Promise::Deferred::New(env)), dir_(std::move(dir)), options_(std::move(options)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      engine_ = std::make_unique<Engine>(dir_, options_);
    } catch (...) {
      error_.capture();
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (!engine_) {
      deferred_.Reject(make_error(env, error_.code, error_.message).Value());
      return;
    }
    Napi::Object obj = NativeModel::constructor.New({Napi::External<Engine>::New(env, engine_.release())});
    deferred_.Resolve(obj);
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string dir_;
  EngineOptions options_;
  std::unique_ptr<Engine> engine_;
  CapturedError error_;
};

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsString()) throw EngineError(ErrorCode::InvalidArgument, "loadModel expects a directory path");
    std::string dir = info[0].As<Napi::String>().Utf8Value();
    EngineOptions eo;
    eo.threads = 0;
    eo.backend = "auto";
    if (info.Length() > 1 && info[1].IsObject()) {
      Napi::Object o = info[1].As<Napi::Object>();
      eo.threads = int(int_option(o, "threads", 0));
      Napi::Value b = o.Get("backend");
      if (b.IsString()) eo.backend = b.As<Napi::String>().Utf8Value();
      Napi::Value d = o.Get("dtype");
      if (d.IsString()) {
        eo.gpu.dtype = parse_gpu_dtype(d.As<Napi::String>().Utf8Value());
        eo.gpu_dtype_set = true;
      }
      eo.gpu.device = int(int_option(o, "device", 0));
    }
    if (eo.backend != "cpu" && eo.backend != "cuda" && eo.backend != "auto")
      throw EngineError(ErrorCode::InvalidArgument, "backend must be cpu, cuda or auto");
    if (eo.backend == "cuda") require_cuda_backend();
    if (eo.threads <= 0) eo.threads = int(std::max(1u, std::thread::hardware_concurrency()));
    auto* worker = new LoadWorker(env, dir, eo);
    Napi::Promise p = worker->promise();
    worker->Queue();
    return p;
  });
}

Napi::Value BackendInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cudaCompiled", cuda_compiled());
  o.Set("cudaDevices", cuda_device_count());
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  NativeModel::Init(env, exports);
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("backendInfo", Napi::Function::New(env, BackendInfo));
  return exports;
}

}  // namespace streamsink

static Napi::Object InitStreamsink(Napi::Env env, Napi::Object exports) { return streamsink::Init(env, exports); }

NODE_API_MODULE(streamsink, InitStreamsink)
