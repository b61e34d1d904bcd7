/**
 * Request-rate and open-stream limits, per tenant and for the whole worker.
 *
 * Rates are token buckets (refilled continuously at `requestsPerSecond`, at
 * most `burst` deep); streams are counters released when the call ends.
 * Every refusal is a LimitExceededError naming the limit (RESOURCE_EXHAUSTED)
 * and is reported to the rejection listener for the metric. Session counts,
 * input sizes and generation lengths are checked where sessions live (the
 * SessionHost), with the limits this class resolves per tenant.
 */
import { LimitExceededError } from "../worker/errors.js";
import { type TenantLimits, UNLIMITED } from "./tenants-file.js";

export interface GlobalLimits {
  /** Requests per second over all tenants on this worker (0 = no limit). */
  requestsPerSecond: number;
  burst: number;
  /** Generate and Stream calls open at once on this worker (0 = no limit). */
  maxConcurrentStreams: number;
}

export const NO_GLOBAL_LIMITS: GlobalLimits = { requestsPerSecond: 0, burst: 0, maxConcurrentStreams: 0 };

class TokenBucket {
  #tokens: number;
  #last: number;
  constructor(
    readonly rate: number,
    readonly size: number,
    now: number,
  ) {
    this.#tokens = size;
    this.#last = now;
  }
  take(now: number): boolean {
    this.#tokens = Math.min(this.size, this.#tokens + ((now - this.#last) / 1000) * this.rate);
    this.#last = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

export class TenantLimiter {
  readonly #defaults: TenantLimits;
  #overrides: Map<string, Partial<TenantLimits>>;
  readonly #global: GlobalLimits;
  readonly #now: () => number;
  readonly #buckets = new Map<string, TokenBucket>();
  #globalBucket: TokenBucket | undefined;
  readonly #streams = new Map<string, number>();
  #globalStreams = 0;
  #onRejected: (limit: string, tenant: string) => void = () => undefined;

  constructor(options: { defaults?: Partial<TenantLimits>; overrides?: Map<string, Partial<TenantLimits>>; global?: Partial<GlobalLimits>; now?: () => number } = {}) {
    this.#defaults = { ...UNLIMITED, ...options.defaults };
    this.#overrides = options.overrides ?? new Map();
    this.#global = { ...NO_GLOBAL_LIMITS, ...options.global };
    this.#now = options.now ?? (() => performance.now());
  }

  /** Told about every refusal: which limit, for which tenant. */
  onRejected(listener: (limit: string, tenant: string) => void): void {
    this.#onRejected = listener;
  }

  /** Replaces the per-tenant overrides (a reloaded tenants file); rate buckets refill at the new rates. */
  replaceOverrides(overrides: Map<string, Partial<TenantLimits>>): void {
    this.#overrides = overrides;
  }

  limitsFor(tenant: string): TenantLimits {
    return { ...this.#defaults, ...this.#overrides.get(tenant) };
  }

  /** Refuses with LimitExceededError when the worker's or the tenant's rate is spent. */
  takeRequest(tenant: string): void {
    const now = this.#now();
    if (this.#global.requestsPerSecond > 0) {
      this.#globalBucket ??= new TokenBucket(this.#global.requestsPerSecond, Math.max(1, this.#global.burst || this.#global.requestsPerSecond), now);
      if (!this.#globalBucket.take(now)) this.reject("global_rate", tenant, `this worker is at its limit of ${this.#global.requestsPerSecond} requests per second`);
    }
    const limits = this.limitsFor(tenant);
    if (limits.requestsPerSecond > 0) {
      let bucket = this.#buckets.get(tenant);
      if (!bucket || bucket.rate !== limits.requestsPerSecond) {
        bucket = new TokenBucket(limits.requestsPerSecond, Math.max(1, limits.burst || limits.requestsPerSecond), now);
        this.#buckets.set(tenant, bucket);
      }
      if (!bucket.take(now)) this.reject("rate", tenant, `tenant "${tenant}" is at its limit of ${limits.requestsPerSecond} requests per second`);
    }
  }

  /** Counts an open stream; the returned function (safe to call twice) releases it. */
  openStream(tenant: string): () => void {
    const max = this.limitsFor(tenant).maxConcurrentStreams;
    const open = this.#streams.get(tenant) ?? 0;
    if (this.#global.maxConcurrentStreams > 0 && this.#globalStreams >= this.#global.maxConcurrentStreams)
      this.reject("global_streams", tenant, `this worker has its maximum of ${this.#global.maxConcurrentStreams} streams open`);
    if (max > 0 && open >= max) this.reject("streams", tenant, `tenant "${tenant}" has its maximum of ${max} streams open`);
    this.#streams.set(tenant, open + 1);
    this.#globalStreams++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#globalStreams--;
      const n = (this.#streams.get(tenant) ?? 1) - 1;
      if (n <= 0) this.#streams.delete(tenant);
      else this.#streams.set(tenant, n);
    };
  }

  /** Streams open now for a tenant (tests, metrics). */
  openStreams(tenant: string): number {
    return this.#streams.get(tenant) ?? 0;
  }

  /** Reports a refusal and throws it. */
  reject(limit: string, tenant: string, message: string): never {
    this.#onRejected(limit, tenant);
    throw new LimitExceededError(message, limit);
  }
}
