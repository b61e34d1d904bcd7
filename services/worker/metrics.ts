/**
 * The worker's Prometheus metrics (prom-client, `streamsink_` prefix, units
 * in names) and the HTTP endpoint that serves them.
 *
 * Counts that other parts of the worker already keep (snapshot stats,
 * forwarded calls) are mirrored at scrape time rather than counted twice.
 * Latencies need a clock at the place where the work happens, so they come in
 * through `observeOp` (one observer per session operation), `onStep` and the
 * snapshot timing methods. Histogram buckets are sized for token latencies:
 * a decode step of a small model on a GPU takes about a millisecond, a CPU
 * step over a large batch hundreds of milliseconds.
 */
import { createServer, type Server } from "node:http";

import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

import type { SessionEvent, SessionOp } from "./operations.js";
import type { HostedSessionInfo } from "./session-host.js";
import type { SnapshotStats } from "./snapshotter.js";

/** Seconds; from a millisecond to half a minute, denser where token latencies fall. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Seconds; time to first token includes the prefill of the prompt and queueing. */
const FIRST_TOKEN_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Bytes of one session snapshot: KB for a small cache up to GB for a large model's. */
const SNAPSHOT_BYTES_BUCKETS = [1 << 10, 16 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30];

/** What the metrics read from the session host at scrape time. */
export interface HostSource {
  readonly sessionCount: number;
  sessionIds(): string[];
  info(id: string): Promise<HostedSessionInfo | undefined>;
  /** Every session's info in one engine call. */
  infoAll(): Promise<HostedSessionInfo[]>;
}

/** Where the worker's metrics come from besides the calls it makes. */
export interface MetricSources {
  host?: HostSource;
  snapshots?: { readonly stats: SnapshotStats };
  /** Calls this worker forwarded to the owner of the session (cluster gateway). */
  forwardedCalls?: () => number;
}

/** Told about one session operation as it runs. */
export interface OpObserver {
  event(e: SessionEvent): void;
  /** The op ended; `err` when it failed. */
  done(err?: unknown): void;
}

export class WorkerMetrics {
  readonly registry = new Registry();
  readonly tokensAppended = new Counter({
    name: "streamsink_tokens_appended_total",
    help: "Tokens appended to sessions (appends and generate prompts)",
    registers: [this.registry],
  });
  readonly tokensGenerated = new Counter({ name: "streamsink_tokens_generated_total", help: "Tokens generated", registers: [this.registry] });
  readonly requests = new Counter({
    name: "streamsink_requests_total",
    help: "Session operations finished, by kind and outcome",
    labelNames: ["kind", "outcome"] as const,
    registers: [this.registry],
  });
  readonly requestSeconds = new Histogram({
    name: "streamsink_request_duration_seconds",
    help: "Wall time of a session operation on the worker that runs it, from admission to its last event",
    labelNames: ["kind"] as const,
    buckets: FIRST_TOKEN_BUCKETS,
    registers: [this.registry],
  });
  readonly firstTokenSeconds = new Histogram({
    name: "streamsink_time_to_first_token_seconds",
    help: "From the start of a generate operation to its first generated token (queueing and prompt prefill included)",
    buckets: FIRST_TOKEN_BUCKETS,
    registers: [this.registry],
  });
  readonly decodeTokenSeconds = new Histogram({
    name: "streamsink_decode_token_seconds",
    help: "Time between two consecutive generated tokens of one generation (per-token decode latency)",
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly stepSeconds = new Histogram({
    name: "streamsink_engine_step_seconds",
    help: "Wall time of one engine step (batched forward)",
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly stepSessions = new Histogram({
    name: "streamsink_engine_step_batch_sessions",
    help: "Sessions in one engine step",
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
    registers: [this.registry],
  });
  readonly stepTokens = new Histogram({
    name: "streamsink_engine_step_batch_tokens",
    help: "Tokens in one engine step",
    buckets: [1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096],
    registers: [this.registry],
  });
  /** Set by the worker: how many sessions it holds right now. */
  sessionCount: () => number = () => 0;
  readonly activeSessions: Gauge = new Gauge({
    name: "streamsink_active_sessions",
    help: "Sessions held by this worker",
    registers: [this.registry],
    collect: (): void => this.activeSessions.set(this.sessionCount()),
  });
  readonly cacheFillTokens = new Gauge({
    name: "streamsink_cache_fill_tokens",
    help: "Tokens held in the KV caches of this worker's sessions (sinks plus window)",
    registers: [this.registry],
    collect: () => this.#scanCaches(),
  });
  readonly cacheCapacityTokens = new Gauge({
    name: "streamsink_cache_capacity_tokens",
    help: "Token capacity of the KV caches of this worker's sessions (S+W each; a dense session's limit)",
    registers: [this.registry],
    collect: () => this.#scanCaches(),
  });
  readonly cacheFullSessions = new Gauge({
    name: "streamsink_cache_full_sessions",
    help: "Sessions whose cache is full, so every new token evicts one",
    registers: [this.registry],
    collect: () => this.#scanCaches(),
  });
  readonly cacheEvictedTokens = new Counter({
    name: "streamsink_cache_evicted_tokens_total",
    help: "Tokens evicted from session caches (seen but no longer held), counted at scrape time over the sessions held then",
    registers: [this.registry],
    collect: () => this.#scanCaches(),
  });
  readonly snapshotsSaved = this.#mirrored("streamsink_snapshots_saved_total", "Session snapshots written", () => this.#snapshotStats?.saved);
  readonly snapshotBytes = this.#mirrored("streamsink_snapshot_written_bytes_total", "Bytes of session snapshots written", () => this.#snapshotStats?.savedBytes);
  readonly snapshotFailures = this.#mirrored(
    "streamsink_snapshot_failures_total",
    "Snapshot exports or writes that failed (retried later)",
    () => this.#snapshotStats?.failed,
  );
  readonly snapshotRejected = this.#mirrored(
    "streamsink_snapshot_rejected_total",
    "Snapshots found corrupt or foreign at restore (deleted; the session started empty)",
    () => this.#snapshotStats?.rejected,
  );
  readonly restores = this.#mirrored("streamsink_snapshot_restores_total", "Sessions restored from a snapshot", () => this.#snapshotStats?.restored);
  readonly snapshotSeconds = new Histogram({
    name: "streamsink_snapshot_save_seconds",
    help: "Time to export one session and write its snapshot",
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly snapshotSizeBytes = new Histogram({
    name: "streamsink_snapshot_size_bytes",
    help: "Size of one session snapshot",
    buckets: SNAPSHOT_BYTES_BUCKETS,
    registers: [this.registry],
  });
  readonly restoreSeconds = new Histogram({
    name: "streamsink_snapshot_restore_seconds",
    help: "Time to load one session snapshot and import it into the engine",
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly forwardedCalls = this.#mirrored(
    "streamsink_grpc_forwarded_calls_total",
    "gRPC calls this worker forwarded to the worker that owns the session",
    () => this.#forwardedCalls?.(),
  );
  readonly deadLettered = new Counter({ name: "streamsink_dead_letter_records_total", help: "Input records sent to the dead-letter topic", registers: [this.registry] });
  readonly assignedPartitions = new Gauge({ name: "streamsink_assigned_partitions", help: "Input partitions owned by this worker", registers: [this.registry] });
  readonly fetchLag = new Gauge({
    name: "streamsink_kafka_fetch_lag_records",
    help: "Records between the last batch this worker fetched from an input partition and the partition's end",
    labelNames: ["partition"] as const,
    registers: [this.registry],
  });
  #host: HostSource | undefined;
  #snapshotStats: SnapshotStats | undefined;
  #forwardedCalls: (() => number) | undefined;
  /** Per held session: tokens it had evicted at the last scan. */
  #evictedAtScan = new Map<string, number>();
  /** The cache scan of the scrape in progress, shared by the metrics it sets. */
  #scan: Promise<void> | undefined;
  #lagPartitions = new Set<number>();
  #server: Server | undefined;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "streamsink_" });
  }

  /** Connects the scrape-time metrics to the parts of the worker that keep them. */
  attach(sources: MetricSources): void {
    if (sources.host) {
      const host = sources.host;
      this.#host = host;
      this.sessionCount = () => host.sessionCount;
    }
    if (sources.snapshots) this.#snapshotStats = sources.snapshots.stats;
    if (sources.forwardedCalls) this.#forwardedCalls = sources.forwardedCalls;
  }

  /** Counts tokens of an event (for ops whose timing is observed elsewhere). */
  onEvent(e: SessionEvent): void {
    if (e.kind === "appended") this.tokensAppended.inc(e.tokens.length);
    else if (e.kind === "token") this.tokensGenerated.inc();
    else if (e.kind === "finished" && e.promptTokens > 0) this.tokensAppended.inc(e.promptTokens);
  }

  /**
   * An observer for one op, created when the op starts running: counts its
   * tokens, times its first token and the gaps between tokens, and counts its
   * outcome and duration when it ends.
   */
  observeOp(op: Pick<SessionOp, "kind">): OpObserver {
    const start = performance.now();
    let lastToken: number | undefined;
    let ended = false;
    return {
      event: (e) => {
        this.onEvent(e);
        if (e.kind !== "token") return;
        const now = performance.now();
        if (lastToken === undefined) this.firstTokenSeconds.observe((now - start) / 1000);
        else this.decodeTokenSeconds.observe((now - lastToken) / 1000);
        lastToken = now;
      },
      done: (err?: unknown) => {
        if (ended) return;
        ended = true;
        this.requests.inc({ kind: op.kind, outcome: err === undefined ? "ok" : outcomeOf(err) });
        this.requestSeconds.observe({ kind: op.kind }, (performance.now() - start) / 1000);
      },
    };
  }

  onStep(sessions: number, tokens: number, ms: number): void {
    this.stepSeconds.observe(ms / 1000);
    this.stepSessions.observe(sessions);
    this.stepTokens.observe(tokens);
  }

  /** A snapshot was exported and written. */
  snapshotSaved(bytes: number, seconds: number): void {
    this.snapshotSeconds.observe(seconds);
    this.snapshotSizeBytes.observe(bytes);
  }

  /** A session was restored from its snapshot. */
  snapshotRestored(seconds: number): void {
    this.restoreSeconds.observe(seconds);
  }

  /** The input partitions this worker owns after a rebalance; lag of the others is dropped. */
  setAssignedPartitions(partitions: readonly number[]): void {
    this.assignedPartitions.set(partitions.length);
    const keep = new Set(partitions);
    for (const p of this.#lagPartitions) {
      if (keep.has(p)) continue;
      this.fetchLag.remove({ partition: String(p) });
      this.#lagPartitions.delete(p);
    }
  }

  /** Lag of an input partition after a fetched batch was processed. */
  setFetchLag(partition: number, records: number): void {
    this.#lagPartitions.add(partition);
    this.fetchLag.set({ partition: String(partition) }, Math.max(0, records));
  }

  /** A counter that follows a number kept elsewhere that only grows (a smaller value means it restarted). */
  #mirrored(name: string, help: string, read: () => number | undefined): Counter {
    let last = 0;
    const counter: Counter = new Counter({
      name,
      help,
      registers: [this.registry],
      collect: () => {
        const now = read();
        if (now === undefined) return;
        if (now < last) last = 0;
        if (now > last) counter.inc(now - last);
        last = now;
      },
    });
    return counter;
  }

  /** One walk over the held sessions per scrape; every cache metric waits for it. */
  #scanCaches(): Promise<void> {
    this.#scan ??= this.#scanNow().finally(() => (this.#scan = undefined));
    return this.#scan;
  }

  async #scanNow(): Promise<void> {
    const host = this.#host;
    if (!host) return;
    let fill = 0;
    let capacity = 0;
    let full = 0;
    let newlyEvicted = 0;
    const evictedNow = new Map<string, number>();
    // One engine call for all sessions (a session closed meanwhile is skipped).
    const infos = await host.infoAll().catch(() => []);
    for (const info of infos) {
      const id = info.session;
      fill += info.cacheFill;
      capacity += info.capacity;
      if (info.capacity > 0 && info.cacheFill >= info.capacity) full++;
      const evicted = Math.max(0, info.tokensSeen - info.cacheFill);
      newlyEvicted += Math.max(0, evicted - (this.#evictedAtScan.get(id) ?? 0));
      evictedNow.set(id, evicted);
    }
    this.#evictedAtScan = evictedNow;
    this.cacheFillTokens.set(fill);
    this.cacheCapacityTokens.set(capacity);
    this.cacheFullSessions.set(full);
    if (newlyEvicted > 0) this.cacheEvictedTokens.inc(newlyEvicted);
  }

  /** Serves /metrics on `port` (0 = any free port); resolves to the bound port. */
  async listen(host: string, port: number): Promise<number> {
    this.#server = createServer((req, res) => {
      if (req.url === "/metrics") {
        this.registry
          .metrics()
          .then((body) => {
            res.writeHead(200, { "content-type": this.registry.contentType });
            res.end(body);
          })
          .catch((err: unknown) => {
            res.writeHead(500);
            res.end(String(err));
          });
      } else if (req.url === "/healthz") {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("ok\n");
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((resolve, reject) => {
      this.#server!.once("error", reject);
      this.#server!.listen(port, host, () => resolve());
    });
    const addr = this.#server.address();
    return typeof addr === "object" && addr ? addr.port : port;
  }

  async close(): Promise<void> {
    const s = this.#server;
    if (!s) return;
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** The outcome label of a failed op: the error's code, lower-cased (bounded: codes are a fixed set). */
function outcomeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[A-Za-z0-9_]{1,40}$/.test(code) ? code.toLowerCase() : "error";
}
