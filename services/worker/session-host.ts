/**
 * SessionHost: the sessions a worker owns, a FIFO of operations per session,
 * and the scheduler that advances them with continuous batching.
 *
 * Each tick builds one engine step in two passes over the sessions with work.
 * First every decoding session contributes its next token (decode first, so a
 * generation advances every tick however much prefill is queued; a quarter of
 * the step's token budget stays for prefill when some is waiting, and the
 * visit starts one further each tick). Then prefill chunks fill the rest of
 * the budget, oldest op first, so appends complete in arrival order (the
 * shortest mean wait) and none waits behind later ones. One engine step runs
 * them all; results go back to each op. Ops on one session never overlap or
 * reorder; ops on different sessions share steps freely.
 */
import { Engine, type Policy, Sampler, type Session, type StepRequest, type StepResult } from "../engine/index.js";
import { InvalidRequestError, LimitExceededError, ShuttingDownError } from "./errors.js";
import type { GenerateOp, OpInput, SessionConfig, SessionEvent, SessionOp } from "./operations.js";

export interface HostLimits {
  /** Sessions this worker holds at once. */
  maxSessions: number;
  /** Ops waiting per session (including the running one). */
  maxQueuePerSession: number;
  /** Tokens in one append or prompt (text longer than 8 characters per token is refused before tokenizing). */
  maxInputTokens: number;
  maxNewTokens: number;
  /** Tokens one engine step may carry over all sessions. */
  maxBatchTokens: number;
  /** Largest prefill chunk one session gets per step. */
  prefillChunk: number;
}

export const DEFAULT_LIMITS: HostLimits = {
  maxSessions: 1024,
  maxQueuePerSession: 64,
  maxInputTokens: 65536,
  maxNewTokens: 4096,
  maxBatchTokens: 512,
  prefillChunk: 128,
};

/**
 * Per-tenant limits at the session host (set when authentication is on): a
 * session key names its tenant (services/security/tenant.ts), and each tenant
 * may hold a bounded number of sessions and send bounded inputs. 0 = no limit.
 */
export interface TenantPolicy {
  tenantOf(sessionKey: string): string;
  limitsFor(tenant: string): { maxSessions: number; maxInputTokens: number; maxNewTokens: number };
}

export interface HostedSessionInfo {
  session: string;
  policy: Policy;
  sinks: number;
  window: number;
  cacheFill: number;
  capacity: number;
  tokensSeen: number;
}

export type EventSink = (event: SessionEvent) => void;

export interface HostHooks {
  /** Called for an unknown session id before creating it: a restored session, or undefined. */
  restore?: (session: string) => Promise<Session | undefined>;
  /** Called after each op that changed a session. */
  changed?: (session: string) => void;
  /** Called when a session is closed. */
  closed?: (session: string) => void;
}

interface Job {
  op: SessionOp;
  emit: EventSink;
  signal: AbortSignal | undefined;
  resolve: () => void;
  reject: (err: unknown) => void;
  pending: number[];
  promptTokens: number;
  wantLogprobs: boolean;
  logprobs: number[];
  appended: number[];
  started: boolean;
  /** Arrival number: prefill is served oldest first. */
  seq: number;
  generate?: {
    sampler: Sampler;
    generated: number[];
    /** Text of the pieces emitted so far. */
    text: string;
    /** Incremental detokenisation: decode from prefixOffset, emit what lies past readOffset. */
    prefixOffset: number;
    readOffset: number;
    stop: string[];
    maxStop: number;
    maxNew: number;
    stopHit: boolean;
    /** Tokens recorded by an earlier owner, re-applied before sampling resumes (GenerateOp.recorded). */
    recorded: number[];
  };
}

interface Hosted {
  id: string;
  session: Session;
  config: Required<SessionConfig>;
  queue: Job[];
  tokensSeen: number;
  /** logOffset of the last op whose effects are complete. */
  appliedOffset?: string;
}

export interface HostStats {
  steps: number;
  stepTokens: number;
}

export class SessionHost {
  readonly engine: Engine;
  readonly limits: HostLimits;
  readonly defaults: Required<SessionConfig>;
  readonly stats: HostStats = { steps: 0, stepTokens: 0 };
  readonly #sessions = new Map<string, Hosted>();
  readonly #admissions = new Map<string, Promise<void>>();
  #round = 0;
  #nextSeq = 0;
  #running = false;
  #closing = false;
  #idleWaiters: Array<() => void> = [];
  #stepListener: ((batchSessions: number, tokens: number, ms: number) => void) | undefined;

  readonly #hooks: HostHooks;
  /** Per session: callbacks waiting for its next op boundary (atBoundary). */
  readonly #boundary = new Map<string, Array<() => void>>();
  #tenants: TenantPolicy | undefined;

  constructor(engine: Engine, defaults: Required<SessionConfig>, limits: Partial<HostLimits> = {}, hooks: HostHooks = {}) {
    this.engine = engine;
    this.defaults = defaults;
    this.limits = { ...DEFAULT_LIMITS, ...limits };
    this.#hooks = hooks;
  }

  /** Called after every engine step (for metrics). */
  onStep(listener: (batchSessions: number, tokens: number, ms: number) => void): void {
    this.#stepListener = listener;
  }

  /** Turns on per-tenant limits. */
  setTenantPolicy(policy: TenantPolicy): void {
    this.#tenants = policy;
  }

  /**
   * The limits a new op must pass before it runs or is logged (ops replayed
   * from the log passed them when they were written): the worker's and its
   * tenant's session count when the op would create a session, and the
   * tenant's input and generation sizes. Throws LimitExceededError.
   */
  checkAdmission(op: SessionOp, inputTokens: number): void {
    const creates = op.kind !== "close" && !this.#sessions.has(op.session);
    const reject = (limit: string, message: string): never => {
      throw new LimitExceededError(message, limit);
    };
    if (creates && this.#sessions.size >= this.limits.maxSessions) reject("sessions", `this worker holds its maximum of ${this.limits.maxSessions} sessions`);
    if (!this.#tenants) return;
    const tenant = this.#tenants.tenantOf(op.session);
    const limits = this.#tenants.limitsFor(tenant);
    if (limits.maxInputTokens > 0 && inputTokens > limits.maxInputTokens)
      reject("input_tokens", `${inputTokens} input tokens exceed tenant "${tenant}"'s limit of ${limits.maxInputTokens}`);
    if (op.kind === "generate" && limits.maxNewTokens > 0 && op.maxNewTokens > limits.maxNewTokens)
      reject("new_tokens", `max_new_tokens ${op.maxNewTokens} exceeds tenant "${tenant}"'s limit of ${limits.maxNewTokens}`);
    if (creates && limits.maxSessions > 0) {
      let held = 0;
      for (const key of this.#sessions.keys()) if (this.#tenants.tenantOf(key) === tenant) held++;
      if (held >= limits.maxSessions) reject("tenant_sessions", `tenant "${tenant}" holds its maximum of ${limits.maxSessions} sessions on this worker`);
    }
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  has(session: string): boolean {
    return this.#sessions.has(session);
  }

  sessionIds(): string[] {
    return [...this.#sessions.keys()];
  }

  /** Tokenizes and range-checks an input; throws InvalidRequestError. */
  resolveInput(input: OpInput | undefined, what: string, allowEmpty: boolean): number[] {
    const hasText = input?.text !== undefined && input.text !== "";
    const hasTokens = input?.tokens !== undefined && input.tokens.length > 0;
    if (hasText && hasTokens) throw new InvalidRequestError(`${what}: give text or token ids, not both`);
    let ids: number[] = [];
    if (hasText) {
      const tokenizer = this.engine.tokenizer;
      if (!tokenizer) throw new InvalidRequestError(`${what}: the model has no tokenizer; send token ids`);
      if (input!.text!.length > this.limits.maxInputTokens * 8) throw new LimitExceededError(`${what}: text longer than the input limit`, "input_tokens");
      ids = tokenizer.encode(input!.text!);
    } else if (hasTokens) {
      ids = [...input!.tokens!];
      const vocab = this.engine.info.vocabSize;
      ids.forEach((t, i) => {
        if (!Number.isInteger(t) || t < 0 || t >= vocab)
          throw new InvalidRequestError(`${what}: token id ${String(t)} at index ${i} is outside the vocabulary [0, ${vocab})`);
      });
    }
    if (ids.length === 0 && !allowEmpty) throw new InvalidRequestError(`${what}: empty input`);
    if (ids.length > this.limits.maxInputTokens)
      throw new LimitExceededError(`${what}: ${ids.length} tokens exceed the limit of ${this.limits.maxInputTokens}`, "input_tokens");
    return ids;
  }

  resolveConfig(config: SessionConfig | undefined): Required<SessionConfig> {
    const policy = config?.policy ?? this.defaults.policy;
    const sinks = config?.sinks ?? this.defaults.sinks;
    const window = config?.window ?? this.defaults.window;
    if (!["dense", "window", "recompute", "sinks"].includes(policy)) throw new InvalidRequestError(`unknown policy "${policy}"`);
    if (!Number.isInteger(window) || window < 1 || window > 1 << 20) throw new InvalidRequestError(`window must be between 1 and ${1 << 20}`);
    if (!Number.isInteger(sinks) || sinks < 0 || sinks > 1024) throw new InvalidRequestError("sinks must be between 0 and 1024");
    return { policy, sinks, window };
  }

  /**
   * Queues an op on its session (created on first use) and resolves when the
   * op has finished; events are delivered to `emit` as they happen. Input is
   * validated before anything is queued.
   */
  execute(op: SessionOp, emit: EventSink, signal?: AbortSignal): Promise<void> {
    // Admission (validation, creation or restore, queueing) is serialised per
    // session id, so ops enter a session's FIFO in the order they arrived even
    // when creating the session takes a while.
    const previous = this.#admissions.get(op.session) ?? Promise.resolve();
    let admitted!: () => void;
    const gate = new Promise<void>((r) => (admitted = r));
    const chain = previous.then(() => gate);
    this.#admissions.set(op.session, chain);
    void chain.then(() => {
      if (this.#admissions.get(op.session) === chain) this.#admissions.delete(op.session);
    });
    return previous.then(() => this.#admit(op, emit, signal, admitted));
  }

  async #admit(op: SessionOp, emit: EventSink, signal: AbortSignal | undefined, admitted: () => void): Promise<void> {
    let queued: { done: Promise<void> };
    try {
      queued = await this.#enqueue(op, emit, signal);
    } finally {
      admitted();
    }
    return queued.done;
  }

  /** Validates and queues; resolves once queued, carrying the op's completion. */
  async #enqueue(op: SessionOp, emit: EventSink, signal: AbortSignal | undefined): Promise<{ done: Promise<void> }> {
    if (this.#closing) throw new ShuttingDownError();
    if (typeof op.session !== "string" || op.session.length === 0 || op.session.length > 256)
      throw new InvalidRequestError("session id must be 1 to 256 characters");
    const job: Job = {
      op,
      emit,
      signal,
      resolve: () => undefined,
      reject: () => undefined,
      pending: [],
      promptTokens: 0,
      wantLogprobs: false,
      logprobs: [],
      appended: [],
      started: false,
      seq: this.#nextSeq++,
    };
    if (op.kind === "append") {
      job.pending = this.resolveInput(op.input, "append", false);
      job.wantLogprobs = op.logprobs ?? false;
    } else if (op.kind === "generate") {
      job.pending = this.resolveInput(op.prompt, "generate prompt", true);
      job.promptTokens = job.pending.length;
      job.generate = this.#generateState(op);
    }
    if (!op.fromLog) this.checkAdmission(op, job.pending.length);
    let hosted = this.#sessions.get(op.session);
    if (!hosted && this.#hooks.restore) {
      const restored = await this.#hooks.restore(op.session);
      hosted = this.#sessions.get(op.session);
      if (restored && !hosted) {
        const i = await restored.info();
        hosted = { id: op.session, session: restored, config: { policy: i.policy, sinks: i.sinks, window: i.window }, queue: [], tokensSeen: i.tokensSeen };
        this.#sessions.set(op.session, hosted);
      } else if (restored) {
        await restored.close();
      }
    }
    if (!hosted) {
      if (op.kind === "close") {
        emit({ kind: "closed", session: op.session, requestId: op.requestId, existed: false });
        return { done: Promise.resolve() };
      }
      if (op.kind === "generate" && job.pending.length === 0)
        throw new InvalidRequestError("generate needs context: the session is empty and no prompt was given");
      const config = this.resolveConfig(op.config);
      const session = await this.engine.openSession({ ...config, sinkToken: "model" });
      hosted = this.#sessions.get(op.session);
      if (hosted) await session.close();
      else {
        hosted = { id: op.session, session, config, queue: [], tokensSeen: 0 };
        this.#sessions.set(op.session, hosted);
      }
    }
    if (hosted.queue.length >= this.limits.maxQueuePerSession && !op.fromLog)
      throw new LimitExceededError(`session "${op.session}" has ${hosted.queue.length} operations queued (limit ${this.limits.maxQueuePerSession})`, "queue");
    const done = new Promise<void>((resolve, reject) => {
      job.resolve = resolve;
      job.reject = reject;
    });
    hosted.queue.push(job);
    this.#kick();
    // Wrapped: an async function returning the bare promise would wait for it.
    return { done };
  }

  /** Adopts a session restored from a snapshot (failover). */
  async adopt(id: string, session: Session, config: Required<SessionConfig>): Promise<void> {
    const existing = this.#sessions.get(id);
    if (existing) await existing.session.close();
    const info = await session.info();
    this.#sessions.set(id, { id, session, config, queue: [], tokensSeen: info.tokensSeen });
  }

  async info(id: string): Promise<HostedSessionInfo | undefined> {
    const hosted = this.#sessions.get(id);
    if (!hosted) return undefined;
    const i = await hosted.session.info();
    return { session: id, policy: i.policy, sinks: i.sinks, window: i.window, cacheFill: i.cacheFill, capacity: i.capacity, tokensSeen: i.tokensSeen };
  }

  /**
   * Info of every hosted session in one engine call (metrics scans): one wait
   * in the engine queue instead of one per session, so a scan under load takes
   * about one step, not one step per session.
   */
  async infoAll(): Promise<HostedSessionInfo[]> {
    const hosted = [...this.#sessions.values()];
    return this.engine.run((native) => {
      const out: HostedSessionInfo[] = [];
      for (const h of hosted) {
        if (h.session.closed) continue;
        let i;
        try {
          i = native.sessionInfo(h.session.id);
        } catch {
          continue; // closed while the scan waited
        }
        out.push({ session: h.id, policy: i.policy, sinks: i.sinks, window: i.window, cacheFill: i.cacheFill, capacity: i.capacity, tokensSeen: i.tokensSeen });
      }
      return out;
    });
  }

  /** Input offset of the last op applied to the session (Kafka mode). */
  appliedOffset(id: string): string | undefined {
    return this.#sessions.get(id)?.appliedOffset;
  }

  /** Sets the applied offset of a restored session (what its snapshot covers). */
  setAppliedOffset(id: string, offset: string | undefined): void {
    const h = this.#sessions.get(id);
    if (h) h.appliedOffset = offset;
  }

  /** True when the session has no op queued or running (a clean point to snapshot). */
  isIdle(id: string): boolean {
    const h = this.#sessions.get(id);
    return !h || h.queue.length === 0;
  }

  /**
   * Calls `fn` synchronously at the session's next op boundary: now when it
   * is idle, else right after its running op's effects are complete and
   * before its next op takes a step. An export started in `fn` therefore
   * sees exactly the state the applied offset describes, even for a session
   * that is never idle. A session closed or evicted first calls `fn` with
   * the session gone (engineSession() is undefined). True when `fn` ran now.
   */
  atBoundary(id: string, fn: () => void): boolean {
    const h = this.#sessions.get(id);
    if (!h || h.queue.length === 0) {
      fn();
      return true;
    }
    const waiting = this.#boundary.get(id);
    if (waiting) waiting.push(fn);
    else this.#boundary.set(id, [fn]);
    return false;
  }

  #reachedBoundary(id: string): void {
    const waiting = this.#boundary.get(id);
    if (!waiting) return;
    this.#boundary.delete(id);
    for (const fn of waiting) fn();
  }

  /** Drops a session without running its queue (ownership moved away); its ops fail. */
  async evict(id: string, reason: Error): Promise<void> {
    const h = this.#sessions.get(id);
    if (!h) return;
    this.#sessions.delete(id);
    for (const job of h.queue.splice(0)) job.reject(reason);
    this.#reachedBoundary(id);
    await h.session.close();
  }

  /** The engine session behind an id (for snapshots). */
  engineSession(id: string): Session | undefined {
    return this.#sessions.get(id)?.session;
  }

  /** Queued plus running ops over all sessions. */
  get queuedOps(): number {
    let n = 0;
    for (const h of this.#sessions.values()) n += h.queue.length;
    return n;
  }

  /** Resolves when no op is queued or running. */
  idle(): Promise<void> {
    if (!this.#running && this.queuedOps === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Stops accepting ops, lets queued ones finish, closes every session. */
  async close(): Promise<void> {
    this.#closing = true;
    await this.idle();
    for (const h of this.#sessions.values()) await h.session.close();
    this.#sessions.clear();
  }

  #generateState(op: GenerateOp): Job["generate"] {
    const maxNew = op.maxNewTokens;
    if (!Number.isInteger(maxNew) || maxNew < 0) throw new InvalidRequestError("max_new_tokens must be a non-negative integer");
    if (maxNew > this.limits.maxNewTokens) throw new LimitExceededError(`max_new_tokens ${maxNew} exceeds the limit of ${this.limits.maxNewTokens}`, "new_tokens");
    const stop = op.stop ?? [];
    if (stop.some((s) => typeof s !== "string" || s.length === 0 || s.length > 256)) throw new InvalidRequestError("stop sequences must be 1 to 256 characters");
    if (stop.length > 16) throw new InvalidRequestError("at most 16 stop sequences");
    let sampler: Sampler;
    try {
      sampler = new Sampler(op.sampling ?? {});
    } catch (err) {
      throw new InvalidRequestError((err as Error).message, { cause: err });
    }
    const recorded = (op.recorded ?? []).slice(0, maxNew);
    sampler.skip(recorded.length);
    return { sampler, generated: [], text: "", prefixOffset: 0, readOffset: 0, stop, maxStop: Math.max(0, ...stop.map((x) => x.length)), maxNew, stopHit: false, recorded };
  }

  #kick(): void {
    if (this.#running) return;
    this.#running = true;
    void this.#loop();
  }

  async #loop(): Promise<void> {
    try {
      for (;;) {
        const progressed = await this.#tick();
        if (!progressed) break;
      }
    } catch (err) {
      // A bug in a tick must not take the process down: fail the ops at the
      // head of each queue (they may be half done) and keep scheduling.
      for (const h of this.#sessions.values()) {
        const job = h.queue.shift();
        job?.reject(err);
      }
    } finally {
      this.#running = false;
      if (this.queuedOps === 0) {
        const waiters = this.#idleWaiters;
        this.#idleWaiters = [];
        for (const w of waiters) w();
      } else {
        this.#kick();
      }
    }
  }

  /** One scheduler tick; false when there was nothing to do. */
  async #tick(): Promise<boolean> {
    const active = [...this.#sessions.values()].filter((h) => h.queue.length > 0);
    if (active.length === 0) return false;
    const rotate = <T>(xs: T[], k: number): T[] => (xs.length === 0 ? xs : [...xs.slice(k % xs.length), ...xs.slice(0, k % xs.length)]);
    const order = rotate(active, this.#round++);
    let budget = this.limits.maxBatchTokens;
    const requests: StepRequest[] = [];
    const owners: Array<{ hosted: Hosted; job: Job; tokens: number[] }> = [];
    const take = (hosted: Hosted, job: Job, tokens: number[]) => {
      budget -= tokens.length;
      job.started = true;
      // Only a sampling (temperature > 0) generation reads the whole next-token
      // distribution; every other step takes the next token alone, and the
      // engine keeps the distribution (on the GPU) until something reads it.
      const next = job.generate && !job.generate.sampler.greedy ? "distribution" : "token";
      requests.push({ session: hosted.session, tokens, logprobs: job.wantLogprobs, next });
      owners.push({ hosted, job, tokens });
    };

    // Pass 1: closes, finished ops, and one decode token per generating session.
    const prefill: Hosted[] = [];
    const prefillWaiting = active.some((h) => (h.queue[0]?.pending.length ?? 0) > 0);
    const decodeFloor = prefillWaiting ? Math.min(this.limits.prefillChunk, Math.floor(this.limits.maxBatchTokens / 4)) : 0;
    for (const hosted of order) {
      // An earlier await in this tick (a close) may have let the session be evicted or emptied.
      const job = hosted.queue[0];
      if (!job || this.#sessions.get(hosted.id) !== hosted) continue;
      if (job.op.kind === "close") {
        await this.#close(hosted, job);
        continue;
      }
      if (job.pending.length > 0) {
        prefill.push(hosted);
        continue;
      }
      if (!job.generate) {
        this.#finishAppend(hosted, job);
        continue;
      }
      if (budget <= decodeFloor) continue;
      const g = job.generate;
      if (g.generated.length >= g.maxNew || g.stopHit || job.signal?.aborted) {
        this.#finishGenerate(hosted, job);
        continue;
      }
      const nextToken = hosted.session.nextToken;
      if (!nextToken) {
        this.#fail(hosted, job, new InvalidRequestError("generate needs context: the session is empty and no prompt was given"));
        continue;
      }
      // A replayed generation re-applies what it produced before the failover; it samples only past that.
      let token: number;
      if (g.generated.length < g.recorded.length) token = g.recorded[g.generated.length]!;
      else if (g.sampler.greedy) token = nextToken.token;
      else {
        // The distribution is on the host unless this session's last step
        // took the next token only (an append, or a greedy generation).
        const next = hosted.session.nextLogprobs ?? (await hosted.session.nextDistribution());
        if (this.#sessions.get(hosted.id) !== hosted || hosted.queue[0] !== job) continue;
        token = g.sampler.sample(next!);
      }
      g.generated.push(token);
      const piece = this.#nextPiece(g);
      g.text += piece;
      job.emit({ kind: "token", session: hosted.id, requestId: job.op.requestId, index: g.generated.length - 1, token, text: piece });
      if (piece.length > 0 && g.maxStop > 0) {
        const tail = g.text.slice(Math.max(0, g.text.length - piece.length - g.maxStop + 1));
        if (g.stop.some((x) => tail.includes(x))) g.stopHit = true;
      }
      take(hosted, job, [token]);
    }

    // Pass 2: prefill chunks, oldest op first.
    prefill.sort((a, b) => a.queue[0]!.seq - b.queue[0]!.seq);
    for (const hosted of prefill) {
      if (budget <= 0) break;
      const job = hosted.queue[0];
      if (!job || this.#sessions.get(hosted.id) !== hosted || job.pending.length === 0) continue;
      take(hosted, job, job.pending.splice(0, Math.min(job.pending.length, this.limits.prefillChunk, budget)));
    }
    if (requests.length === 0) return true;

    const t0 = performance.now();
    let results: Array<StepResult | undefined>;
    try {
      results = await this.engine.step(requests);
    } catch (err) {
      // Input is validated before it is queued, so a failed step is rare (a
      // dense session at its limit, memory). The engine validates a whole step
      // before touching any session, so rerunning each request alone is safe
      // and fails only the ones at fault.
      if (requests.length === 1) {
        this.#fail(owners[0]!.hosted, owners[0]!.job, err);
        return true;
      }
      results = [];
      for (let i = 0; i < requests.length; i++) {
        try {
          results.push((await this.engine.step([requests[i]!]))[0]);
        } catch (single) {
          results.push(undefined);
          this.#fail(owners[i]!.hosted, owners[i]!.job, single);
        }
      }
    }
    this.stats.steps++;
    this.stats.stepTokens += requests.reduce((s, r) => s + r.tokens.length, 0);
    this.#stepListener?.(requests.length, requests.reduce((s, r) => s + r.tokens.length, 0), performance.now() - t0);

    owners.forEach((o, i) => {
      if (!results[i]) return;
      o.hosted.tokensSeen += o.tokens.length;
      o.job.appended.push(...o.tokens);
      const lp = results[i]?.tokenLogprobs;
      if (lp) for (const v of lp) o.job.logprobs.push(v);
      if (o.job.op.kind === "append" && o.job.pending.length === 0) this.#finishAppend(o.hosted, o.job);
    });
    return true;
  }

  #finishAppend(hosted: Hosted, job: Job): void {
    hosted.queue.shift();
    if (job.op.logOffset !== undefined) hosted.appliedOffset = job.op.logOffset;
    job.emit({
      kind: "appended",
      session: hosted.id,
      requestId: job.op.requestId,
      tokens: job.appended,
      ...(job.wantLogprobs ? { logprobs: job.logprobs } : {}),
      tokensSeen: hosted.tokensSeen,
    });
    this.#hooks.changed?.(hosted.id);
    job.resolve();
    this.#reachedBoundary(hosted.id);
  }

  /**
   * The text the newest generated token adds. Decoding restarts a few tokens
   * back (prefixOffset) so byte-level pieces that complete a UTF-8 character
   * together come out together; a piece ending in an incomplete character
   * (U+FFFD) is held back until the next token completes it.
   */
  #nextPiece(g: NonNullable<Job["generate"]>): string {
    const tokenizer = this.engine.tokenizer;
    if (!tokenizer) return "";
    const prefix = g.readOffset > g.prefixOffset ? tokenizer.decode(g.generated.slice(g.prefixOffset, g.readOffset)) : "";
    const full = tokenizer.decode(g.generated.slice(g.prefixOffset));
    if (full.length > prefix.length && !full.endsWith("\uFFFD")) {
      g.prefixOffset = g.readOffset;
      g.readOffset = g.generated.length;
      return full.slice(prefix.length);
    }
    return "";
  }

  /** Text still held back when a generation ends (an incomplete character at the end). */
  #remainder(g: NonNullable<Job["generate"]>): string {
    const tokenizer = this.engine.tokenizer;
    if (!tokenizer || g.readOffset >= g.generated.length) return "";
    const prefix = g.readOffset > g.prefixOffset ? tokenizer.decode(g.generated.slice(g.prefixOffset, g.readOffset)) : "";
    return tokenizer.decode(g.generated.slice(g.prefixOffset)).slice(prefix.length);
  }

  #finishGenerate(hosted: Hosted, job: Job): void {
    hosted.queue.shift();
    if (job.op.logOffset !== undefined) hosted.appliedOffset = job.op.logOffset;
    const g = job.generate!;
    let text = g.text + this.#remainder(g);
    let reason: "length" | "stop" | "cancelled" = "length";
    if (g.stopHit) {
      reason = "stop";
      const cut = Math.min(...g.stop.map((s) => text.indexOf(s)).filter((i) => i >= 0));
      text = text.slice(0, cut);
    } else if (job.signal?.aborted && g.generated.length < g.maxNew) {
      reason = "cancelled";
    }
    job.emit({
      kind: "finished",
      session: hosted.id,
      requestId: job.op.requestId,
      reason,
      promptTokens: job.promptTokens,
      generatedTokens: g.generated.length,
      text,
    });
    if (g.generated.length > 0 || job.promptTokens > 0) this.#hooks.changed?.(hosted.id);
    job.resolve();
    this.#reachedBoundary(hosted.id);
  }

  #fail(hosted: Hosted, job: Job, err: unknown): void {
    const i = hosted.queue.indexOf(job);
    if (i >= 0) hosted.queue.splice(i, 1);
    job.reject(err);
    this.#reachedBoundary(hosted.id);
  }

  async #close(hosted: Hosted, job: Job): Promise<void> {
    hosted.queue.shift();
    // Ops queued behind a close fail: the session is gone.
    for (const rest of hosted.queue.splice(0)) rest.reject(new InvalidRequestError(`session "${hosted.id}" was closed`));
    this.#sessions.delete(hosted.id);
    this.#reachedBoundary(hosted.id);
    await hosted.session.close();
    this.#hooks.closed?.(hosted.id);
    job.emit({ kind: "closed", session: hosted.id, requestId: job.op.requestId, existed: true });
    job.resolve();
  }
}
