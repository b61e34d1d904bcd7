/**
 * A streaming session: append tokens or text, read per-token log-probs,
 * generate, export its state. Operations on one session run in order through
 * the engine's queue.
 */
import type { Engine, NextToken, StepResult } from "./engine.js";
import { EngineError, InvalidArgumentError, SessionNotFoundError } from "./errors.js";
import type { NativeSessionInfo } from "./native-binding.js";
import { Sampler, type SamplingOptions } from "./sampler.js";

export type SessionInfo = NativeSessionInfo;

export interface AppendResult {
  /** log p(token_i | everything before); NaN for the session's very first token. */
  logprobs?: Float32Array;
  tokens: number[];
}

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  /** Token ids that end the generation (they are appended and returned). */
  stopTokens?: readonly number[];
  /** Called with each new token as soon as it is sampled. */
  onToken?: (token: number) => void;
  signal?: AbortSignal;
}

export type FinishReason = "length" | "stop" | "cancelled";

export interface GenerateResult {
  tokens: number[];
  finishReason: FinishReason;
}

/** Session.exportSince: the whole export, or what changed in a sink + window cache. */
export type SessionDelta =
  | { kind: "whole"; bytes: Buffer }
  | { kind: "slots"; skeleton: Buffer; sinks: Buffer | undefined; slots: number[]; slotBytes: Buffer };

export class Session implements AsyncDisposable {
  readonly engine: Engine;
  readonly id: number;
  #closed = false;
  #next: Float32Array | undefined;
  #nextToken: NextToken | undefined;

  /** @internal Created by Engine.openSession / importSession. */
  constructor(engine: Engine, id: number) {
    this.engine = engine;
    this.id = id;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** @internal */
  requireOpen(): number {
    if (this.#closed) throw new SessionNotFoundError("E_SESSION_NOT_FOUND", `session ${this.id} is closed`);
    return this.id;
  }

  /** @internal What a step told about the next token (nothing before the session's first token). */
  setNext(result: StepResult): void {
    if (!result.nextToken) return;
    this.#nextToken = result.nextToken;
    this.#next = result.nextLogprobs;
  }

  /** @internal */
  markClosed(): void {
    this.#closed = true;
  }

  /**
   * Log-probabilities of the next token, after the last appended one, as the
   * last step returned them: undefined before the first token, and after a
   * step that returned the next token only (a greedy generate); then
   * nextDistribution() fetches them.
   */
  get nextLogprobs(): Float32Array | undefined {
    return this.#next;
  }

  /** The most likely next token and its log-prob; undefined before the first token. */
  get nextToken(): NextToken | undefined {
    return this.#nextToken;
  }

  /** The next-token log-probabilities, fetched from the engine when the last step did not return them. */
  async nextDistribution(): Promise<Float32Array | undefined> {
    if (this.#next || !this.#nextToken) return this.#next;
    await this.engine.step([{ session: this, tokens: [] }]);
    return this.#next;
  }

  async append(tokens: ArrayLike<number>, options: { logprobs?: boolean } = {}): Promise<AppendResult> {
    const ids = Array.from(tokens);
    if (ids.some((t) => !Number.isInteger(t))) throw new InvalidArgumentError("E_INVALID_ARGUMENT", "token ids must be integers");
    const [result] = await this.engine.step([{ session: this, tokens: ids, logprobs: options.logprobs ?? false }]);
    return result?.tokenLogprobs ? { tokens: ids, logprobs: result.tokenLogprobs } : { tokens: ids };
  }

  async appendText(text: string, options: { logprobs?: boolean } = {}): Promise<AppendResult> {
    const tokenizer = this.engine.tokenizer;
    if (!tokenizer) throw new EngineError("E_TOKENIZER", "the model has no tokenizer.json; append token ids instead");
    return this.append(tokenizer.encode(text), options);
  }

  /**
   * Samples up to `maxNewTokens` tokens, appending each to the session. The
   * session must have seen at least one token. Aborting the signal stops after
   * the token in flight.
   */
  async generate(options: GenerateOptions): Promise<GenerateResult> {
    if (!Number.isInteger(options.maxNewTokens) || options.maxNewTokens < 0)
      throw new InvalidArgumentError("E_INVALID_ARGUMENT", `maxNewTokens must be a non-negative integer, got ${options.maxNewTokens}`);
    const sampler = new Sampler(options);
    const stop = new Set(options.stopTokens ?? []);
    const tokens: number[] = [];
    // Greedy decoding reads only the next token, so its steps leave the
    // distribution with the engine (on the GPU, on the device).
    const next = sampler.greedy ? "token" : "distribution";
    while (tokens.length < options.maxNewTokens) {
      if (options.signal?.aborted) return { tokens, finishReason: "cancelled" };
      if (!this.#nextToken) throw new InvalidArgumentError("E_INVALID_ARGUMENT", "generate needs a prompt: append at least one token first");
      const token = sampler.greedy ? this.#nextToken.token : sampler.sample((await this.nextDistribution())!);
      await this.engine.step([{ session: this, tokens: [token], next }]);
      tokens.push(token);
      options.onToken?.(token);
      if (stop.has(token)) return { tokens, finishReason: "stop" };
    }
    return { tokens, finishReason: "length" };
  }

  async info(): Promise<SessionInfo> {
    const id = this.requireOpen();
    return this.engine.run((n) => n.sessionInfo(id));
  }

  /** The session's state as versioned, checksummed bytes (see Engine.importSession). */
  async export(): Promise<Buffer> {
    const id = this.requireOpen();
    return this.engine.run((n) => n.exportSession(id));
  }

  /**
   * For incremental snapshot stores: what changed since the session's cache
   * stream held `fromTokens` tokens (< 0: everything), copying only that.
   * `whole` for a session without a sink + window cache (dense, recompute).
   * Otherwise the export with empty SINK and WIND parts (`skeleton`), the
   * sink payload when it may have changed, and the window ring slots written
   * since, each 2 x layers x kv_heads x head_dim fp32 (per layer K then V).
   */
  async exportSince(fromTokens: number): Promise<SessionDelta> {
    const id = this.requireOpen();
    const raw = await this.engine.run((n) => n.exportSessionSince(id, fromTokens));
    if (raw.readUInt8(0) === 0) return { kind: "whole", bytes: raw.subarray(1) };
    let at = 1;
    const skeletonLength = Number(raw.readBigUInt64LE(at));
    const skeleton = raw.subarray(at + 8, at + 8 + skeletonLength);
    at += 8 + skeletonLength;
    const withSinks = raw.readUInt8(at) === 1;
    const sinksLength = Number(raw.readBigUInt64LE(at + 1));
    const sinks = raw.subarray(at + 9, at + 9 + sinksLength);
    at += 9 + sinksLength;
    const count = raw.readUInt32LE(at);
    const slots = Array.from({ length: count }, (_, i) => raw.readInt32LE(at + 4 + 4 * i));
    return { kind: "slots", skeleton, sinks: withSinks ? sinks : undefined, slots, slotBytes: raw.subarray(at + 4 + 4 * count) };
  }

  /** Frees the session. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.engine.forget(this);
    await this.engine.run((n) => n.closeSession(this.id)).catch((err: unknown) => {
      if (!(err instanceof SessionNotFoundError) && !(err instanceof EngineError && err.code === "E_DISPOSED")) throw err;
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
