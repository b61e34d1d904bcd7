/**
 * Engine: a loaded model (native CPU/CUDA backend) plus its tokenizer, and
 * the batched step that advances many sessions in one forward pass.
 *
 * The native model runs one call at a time, so every native call goes through
 * a FIFO here: callers may issue steps and session operations concurrently and
 * they run in order. Steps run off the JS thread; the event loop stays free.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

import { EngineError, fromNative, InvalidArgumentError, ModelLoadError } from "./errors.js";
import { nativeAddon, type NativeModel, type NativeModelInfo, type NativePolicy } from "./native-binding.js";
import { Session } from "./session.js";
import { TextTokenizer } from "./tokenizer.js";

export type Policy = NativePolicy;
export const POLICIES: readonly Policy[] = ["dense", "window", "recompute", "sinks"];

export type ModelInfo = NativeModelInfo;

export interface EngineOptions {
  /** CPU threads for the CPU backend; default: all cores. */
  threads?: number;
  /** `auto` picks CUDA when the build has it and a GPU is visible, else the CPU. */
  backend?: "cpu" | "cuda" | "auto";
  /** CUDA backend weight and cache type; default bf16 (fp16 for fp16 checkpoints). */
  dtype?: "bf16" | "fp16" | "fp32";
}

export interface SessionOptions {
  policy?: Policy;
  /** S: attention sinks kept at the start (policy `sinks`); default 4, or 1 with a learned sink token. */
  sinks?: number;
  /** W: recent tokens kept (policies `sinks`, `window`, `recompute`); default 1020. */
  window?: number;
  /**
   * Learned sink token prepended to the session: `"model"` (default) uses the
   * model's `streamsink.sink_token_id` when it has one, `"none"` disables it,
   * a number forces that id.
   */
  sinkToken?: number | "model" | "none";
  /** Upper bound on a `dense` session's length (its cache grows without eviction). */
  maxDenseTokens?: number;
}

export interface StepRequest {
  session: Session;
  tokens: ArrayLike<number>;
  /** Return log p(token_i | everything before) for each appended token. */
  logprobs?: boolean;
  /**
   * What comes back about the next token: `"distribution"` (default) its
   * log-probabilities over the vocabulary, `"token"` only the most likely one
   * and its log-prob (a greedy decode). With `"token"` the CUDA backend keeps
   * the distribution on the GPU, and the step moves 8 bytes per session to
   * the host instead of 4 x vocab; Session.nextDistribution() fetches it.
   */
  next?: "distribution" | "token";
}

/** The most likely next token (ties: the lowest id) and its log-probability. */
export interface NextToken {
  token: number;
  logprob: number;
}

export interface StepResult {
  tokenLogprobs?: Float32Array;
  /** Present when the request asked for the distribution and the session has seen a token. */
  nextLogprobs?: Float32Array;
  /** Present once the session has seen a token. */
  nextToken?: NextToken;
}

export class Engine implements AsyncDisposable {
  readonly modelDir: string;
  readonly info: ModelInfo;
  readonly tokenizer: TextTokenizer | undefined;
  #native: NativeModel | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #sessions = new Set<Session>();

  private constructor(modelDir: string, native: NativeModel, tokenizer: TextTokenizer | undefined) {
    this.modelDir = modelDir;
    this.#native = native;
    this.info = native.info();
    this.tokenizer = tokenizer;
  }

  /** Loads a Hugging Face model directory (config.json, safetensors, tokenizer.json). */
  static async load(modelDir: string, options: EngineOptions = {}): Promise<Engine> {
    const dir = resolve(modelDir);
    if (!existsSync(dir)) throw new ModelLoadError("E_IO", `model directory ${dir} does not exist`);
    let native: NativeModel;
    try {
      native = await nativeAddon().loadModel(dir, {
        threads: options.threads ?? 0,
        backend: options.backend ?? "auto",
        ...(options.dtype ? { dtype: options.dtype } : {}),
      });
    } catch (err) {
      throw fromNative(err);
    }
    try {
      const tokenizer = existsSync(join(dir, "tokenizer.json")) ? await TextTokenizer.load(dir) : undefined;
      return new Engine(dir, native, tokenizer);
    } catch (err) {
      native.dispose();
      throw err;
    }
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Runs `fn` on the native model after every earlier call has finished. */
  run<T>(fn: (native: NativeModel) => T | Promise<T>): Promise<T> {
    const next = this.#queue.then(async () => {
      const native = this.#native;
      if (!native) throw new EngineError("E_DISPOSED", "engine has been closed");
      try {
        return await fn(native);
      } catch (err) {
        throw fromNative(err);
      }
    });
    this.#queue = next.catch(() => undefined);
    return next;
  }

  resolveSessionOptions(options: SessionOptions): Required<Omit<SessionOptions, "sinkToken">> & { sinkToken: number } {
    const policy = options.policy ?? "sinks";
    if (!POLICIES.includes(policy)) throw new InvalidArgumentError("E_INVALID_ARGUMENT", `unknown policy "${String(policy)}" (${POLICIES.join(", ")})`);
    let sinkToken = -1;
    if (options.sinkToken === undefined || options.sinkToken === "model") sinkToken = this.info.sinkTokenId;
    else if (typeof options.sinkToken === "number") sinkToken = options.sinkToken;
    const sinks = options.sinks ?? (sinkToken >= 0 ? 1 : 4);
    return {
      policy,
      sinks,
      window: options.window ?? 1020,
      sinkToken,
      maxDenseTokens: options.maxDenseTokens ?? 1 << 20,
    };
  }

  async openSession(options: SessionOptions = {}): Promise<Session> {
    const resolved = this.resolveSessionOptions(options);
    const id = await this.run((n) => n.openSession(resolved));
    return this.#track(new Session(this, id));
  }

  /** Recreates a session from Session.export() bytes (same model required). */
  async importSession(bytes: Uint8Array): Promise<Session> {
    const id = await this.run((n) => n.importSession(bytes));
    const session = this.#track(new Session(this, id));
    // A zero-token step returns the restored next-token distribution, so
    // generation can continue right away.
    await this.step([{ session, tokens: [] }]);
    return session;
  }

  /**
   * One engine step over many sessions: each session's tokens are appended
   * (as a prefill chunk, or one decode token) in a single batched forward.
   * A session may appear at most once per step.
   */
  async step(requests: readonly StepRequest[]): Promise<StepResult[]> {
    const entries = requests.map((r) => {
      if (r.session.engine !== this) throw new InvalidArgumentError("E_INVALID_ARGUMENT", "session belongs to another engine");
      if (r.next !== undefined && r.next !== "distribution" && r.next !== "token")
        throw new InvalidArgumentError("E_INVALID_ARGUMENT", `next must be "distribution" or "token", got ${String(r.next)}`);
      return { session: r.session.requireOpen(), tokens: Int32Array.from(r.tokens), logprobs: r.logprobs ?? false, nextDistribution: r.next !== "token" };
    });
    const outputs = await this.run((n) => n.step(entries, true));
    return outputs.map((o, i) => {
      const nextToken = o.nextToken !== undefined ? { token: o.nextToken, logprob: o.nextTokenLogprob ?? Number.NaN } : undefined;
      const result: StepResult = {};
      if (o.tokenLogprobs) result.tokenLogprobs = o.tokenLogprobs;
      if (o.nextLogprobs) result.nextLogprobs = o.nextLogprobs;
      if (nextToken) result.nextToken = nextToken;
      requests[i]!.session.setNext(result);
      return result;
    });
  }

  /** @internal */
  forget(session: Session): void {
    this.#sessions.delete(session);
  }

  #track(session: Session): Session {
    this.#sessions.add(session);
    return session;
  }

  /** Waits for queued work, then frees the model. Safe to call twice. */
  async close(): Promise<void> {
    if (!this.#native) return;
    await this.#queue;
    const native = this.#native;
    this.#native = undefined;
    for (const s of this.#sessions) s.markClosed();
    this.#sessions.clear();
    native?.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
