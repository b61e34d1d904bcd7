/**
 * The worker's Prometheus metrics (prom-client, `streamsink_` prefix, units
 * in names) and the HTTP endpoint that serves them.
 */
import { createServer, type Server } from "node:http";

import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

import type { SessionEvent } from "./operations.js";

export class WorkerMetrics {
  readonly registry = new Registry();
  readonly tokensAppended = new Counter({ name: "streamsink_tokens_appended_total", help: "Tokens appended to sessions (prompts and appends)", registers: [this.registry] });
  readonly tokensGenerated = new Counter({ name: "streamsink_tokens_generated_total", help: "Tokens generated", registers: [this.registry] });
  readonly requests = new Counter({
    name: "streamsink_requests_total",
    help: "Session operations finished, by kind and outcome",
    labelNames: ["kind", "outcome"] as const,
    registers: [this.registry],
  });
  readonly stepSeconds = new Histogram({
    name: "streamsink_engine_step_seconds",
    help: "Wall time of one engine step (batched forward)",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly stepSessions = new Histogram({
    name: "streamsink_engine_step_batch_sessions",
    help: "Sessions in one engine step",
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [this.registry],
  });
  readonly stepTokens = new Histogram({
    name: "streamsink_engine_step_batch_tokens",
    help: "Tokens in one engine step",
    buckets: [1, 4, 16, 64, 128, 256, 512, 1024, 2048],
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
  readonly deadLettered = new Counter({ name: "streamsink_dead_letter_records_total", help: "Input records sent to the dead-letter topic", registers: [this.registry] });
  readonly assignedPartitions = new Gauge({ name: "streamsink_assigned_partitions", help: "Input partitions owned by this worker", registers: [this.registry] });
  #server: Server | undefined;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "streamsink_process_" });
  }

  onEvent(e: SessionEvent): void {
    if (e.kind === "appended") this.tokensAppended.inc(e.tokens.length);
    else if (e.kind === "token") this.tokensGenerated.inc();
  }

  onStep(sessions: number, tokens: number, ms: number): void {
    this.stepSeconds.observe(ms / 1000);
    this.stepSessions.observe(sessions);
    this.stepTokens.observe(tokens);
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
