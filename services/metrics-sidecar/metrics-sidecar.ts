/**
 * MetricsSidecar: the process beside each worker that Prometheus scrapes.
 * `/metrics` is the worker's own exposition (the last good one when the
 * worker is down) followed by the sidecar's families: scrape health and age,
 * GPU gauges from nvidia-smi, and consumer-group lag from Kafka. The worker's
 * families and the sidecar's never share a name (`streamsink_sidecar_*`,
 * `streamsink_gpu_*`, `streamsink_kafka_consumer_group_*`, ...), so the two
 * texts concatenate into one valid exposition. `/healthz` answers while the
 * sidecar itself works, whatever the worker's state, with details as JSON.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";

import { collectDefaultMetrics, Registry } from "prom-client";

import type { Logger } from "../worker/logger.js";
import { GpuProbe } from "./gpu-probe.js";
import { KafkaLagProbe } from "./kafka-lag-probe.js";
import type { SidecarConfig } from "./sidecar-config.js";
import { WorkerScraper } from "./worker-scraper.js";

export interface SidecarHealth {
  status: "ok";
  worker: { url: string; up: boolean; scrapeAgeSeconds: number; lastError?: string };
  gpu: { enabled: boolean; lastError?: string };
  kafka?: { group: string; topic: string; up: boolean; ageSeconds: number; lastError?: string };
}

export class MetricsSidecar {
  readonly config: SidecarConfig;
  readonly registry = new Registry();
  readonly worker: WorkerScraper;
  readonly gpu: GpuProbe;
  readonly kafka: KafkaLagProbe | undefined;
  readonly #log: Logger;
  #server: Server | undefined;
  #port = 0;

  constructor(config: SidecarConfig, log: Logger) {
    this.config = config;
    this.#log = log;
    collectDefaultMetrics({ register: this.registry, prefix: "streamsink_sidecar_" });
    this.worker = new WorkerScraper(config.workerMetricsUrl, config.workerTimeoutMs, this.registry);
    this.gpu = new GpuProbe(config.nvidiaSmi, config.gpuTimeoutMs, this.registry);
    this.kafka = config.kafka ? new KafkaLagProbe(config.kafka, this.registry, log) : undefined;
  }

  get port(): number {
    return this.#port;
  }

  /** Starts the lag poller and the HTTP server; resolves to the bound port. */
  async start(): Promise<number> {
    this.kafka?.start();
    this.#server = createServer((req, res) => void this.#handle(req, res));
    await new Promise<void>((resolve, reject) => {
      this.#server!.once("error", reject);
      this.#server!.listen(this.config.port, this.config.host, () => resolve());
    });
    const addr = this.#server.address();
    this.#port = typeof addr === "object" && addr ? addr.port : this.config.port;
    return this.#port;
  }

  /** The exposition text served on /metrics: the worker's, then the sidecar's. */
  async exposition(): Promise<string> {
    const [scrape] = await Promise.all([this.worker.scrape(), this.gpu.sample()]);
    const own = await this.registry.metrics();
    return scrape.body + own;
  }

  health(): SidecarHealth {
    const w = this.worker.state;
    const health: SidecarHealth = {
      status: "ok",
      worker: { url: this.config.workerMetricsUrl, up: w.up, scrapeAgeSeconds: round(w.ageSeconds), ...(w.lastError ? { lastError: w.lastError } : {}) },
      gpu: { enabled: this.gpu.available, ...(this.gpu.lastError ? { lastError: this.gpu.lastError } : {}) },
    };
    if (this.kafka) {
      const k = this.kafka;
      health.kafka = {
        group: k.config.group,
        topic: k.config.topic,
        up: k.up,
        ageSeconds: round(k.ageSeconds),
        ...(k.lastError ? { lastError: k.lastError } : {}),
      };
    }
    return health;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    try {
      if (path === "/metrics") {
        const body = await this.exposition();
        res.writeHead(200, { "content-type": this.registry.contentType }).end(req.method === "HEAD" ? undefined : body);
      } else if (path === "/healthz") {
        res.writeHead(200, { "content-type": "application/json" }).end(`${JSON.stringify(this.health())}\n`);
      } else {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found: try /metrics or /healthz\n");
      }
    } catch (err) {
      this.#log.error("serving a request failed", { path, error: String(err) });
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
      res.end(`${String(err)}\n`);
    }
  }

  async stop(): Promise<void> {
    const s = this.#server;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
    await this.kafka?.stop();
  }
}

function round(seconds: number): number {
  return Math.round(seconds * 1000) / 1000;
}
