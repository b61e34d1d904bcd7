/**
 * WorkerScraper: reads the worker's /metrics on every scrape of the sidecar
 * and keeps the last good body. When the worker is down or slow, the last
 * good body is served again and `streamsink_sidecar_worker_scrape_age_seconds`
 * tells how old it is, so dashboards keep their last values and alerts can
 * fire on the age instead of on vanished series.
 */
import { Counter, Gauge, type Registry } from "prom-client";

export interface WorkerScrape {
  /** The last good exposition text of the worker ("" before the first success). */
  body: string;
  up: boolean;
  /** Seconds since the last good scrape (since the scraper started when none has succeeded). */
  ageSeconds: number;
  lastError: string | undefined;
}

export class WorkerScraper {
  readonly url: string;
  readonly timeoutMs: number;
  readonly #up: Gauge;
  readonly #age: Gauge;
  readonly #failures: Counter;
  readonly #duration: Gauge;
  #body = "";
  #lastGood: number;
  #up1 = false;
  #lastError: string | undefined;
  #inFlight: Promise<WorkerScrape> | undefined;

  constructor(url: string, timeoutMs: number, registry: Registry) {
    this.url = url;
    this.timeoutMs = timeoutMs;
    this.#lastGood = performance.now();
    this.#up = new Gauge({ name: "streamsink_sidecar_worker_up", help: "1 when the last scrape of the worker succeeded, else 0", registers: [registry] });
    this.#age = new Gauge({
      name: "streamsink_sidecar_worker_scrape_age_seconds",
      help: "Seconds since the worker's metrics were last read successfully (the worker metrics served are this old)",
      registers: [registry],
    });
    this.#failures = new Counter({
      name: "streamsink_sidecar_worker_scrape_failures_total",
      help: "Scrapes of the worker that failed (refused, timed out, or not HTTP 200)",
      registers: [registry],
    });
    this.#duration = new Gauge({
      name: "streamsink_sidecar_worker_scrape_duration_seconds",
      help: "Duration of the last scrape of the worker",
      registers: [registry],
    });
  }

  /** Scrapes the worker (one request at a time; concurrent callers share it). */
  scrape(): Promise<WorkerScrape> {
    this.#inFlight ??= this.#scrapeNow().finally(() => (this.#inFlight = undefined));
    return this.#inFlight;
  }

  /** The state after the last scrape, without scraping. */
  get state(): WorkerScrape {
    return { body: this.#body, up: this.#up1, ageSeconds: (performance.now() - this.#lastGood) / 1000, lastError: this.#lastError };
  }

  async #scrapeNow(): Promise<WorkerScrape> {
    const t0 = performance.now();
    try {
      const res = await fetch(this.url, { signal: AbortSignal.timeout(this.timeoutMs), headers: { accept: "text/plain" } });
      const body = await res.text();
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      this.#body = body.endsWith("\n") || body === "" ? body : `${body}\n`;
      this.#lastGood = performance.now();
      this.#up1 = true;
      this.#lastError = undefined;
    } catch (err) {
      this.#up1 = false;
      this.#lastError = describe(err);
      this.#failures.inc();
    }
    const now = performance.now();
    this.#duration.set((now - t0) / 1000);
    this.#up.set(this.#up1 ? 1 : 0);
    this.#age.set((now - this.#lastGood) / 1000);
    return this.state;
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    if (err.name === "TimeoutError") return "timed out";
    return cause?.code ?? cause?.message ?? err.message;
  }
  return String(err);
}
