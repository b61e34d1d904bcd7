/**
 * GpuProbe: utilisation, memory, power and temperature of the node's GPUs
 * from `nvidia-smi --query-gpu` (CSV), read at every scrape. Where nvidia-smi
 * is not installed (no GPU, or a container without the driver's utilities)
 * there are no GPU series at all and `streamsink_sidecar_gpu_devices` is 0;
 * an nvidia-smi that exists but fails (driver gone) is counted as a failure.
 */
import { execFile } from "node:child_process";

import { Counter, Gauge, type Registry } from "prom-client";

/** Fields asked of nvidia-smi, in this order (values without units: %, MiB, W, °C). */
export const GPU_QUERY_FIELDS = [
  "index",
  "uuid",
  "name",
  "utilization.gpu",
  "utilization.memory",
  "memory.used",
  "memory.total",
  "power.draw",
  "power.limit",
  "temperature.gpu",
] as const;

export interface GpuSample {
  index: string;
  uuid: string;
  name: string;
  /** 0..1; undefined where the GPU does not report it ("[N/A]"). */
  utilization: number | undefined;
  memoryUtilization: number | undefined;
  memoryUsedBytes: number | undefined;
  memoryTotalBytes: number | undefined;
  powerWatts: number | undefined;
  powerLimitWatts: number | undefined;
  temperatureCelsius: number | undefined;
}

const MIB = 1024 * 1024;

/** Parses `nvidia-smi --query-gpu=<GPU_QUERY_FIELDS> --format=csv,noheader,nounits` output. */
export function parseNvidiaSmiCsv(text: string): GpuSample[] {
  const out: GpuSample[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const cells = line.split(",").map((c) => c.trim());
    if (cells.length !== GPU_QUERY_FIELDS.length) throw new Error(`nvidia-smi: expected ${GPU_QUERY_FIELDS.length} fields, got ${cells.length}: "${line}"`);
    const num = (i: number, scale = 1): number | undefined => {
      const v = Number(cells[i]);
      return cells[i] === "" || !Number.isFinite(v) ? undefined : v * scale;
    };
    out.push({
      index: cells[0]!,
      uuid: cells[1]!,
      name: cells[2]!,
      utilization: num(3, 0.01),
      memoryUtilization: num(4, 0.01),
      memoryUsedBytes: num(5, MIB),
      memoryTotalBytes: num(6, MIB),
      powerWatts: num(7),
      powerLimitWatts: num(8),
      temperatureCelsius: num(9),
    });
  }
  return out;
}

type GaugeKey = Exclude<keyof GpuSample, "index" | "uuid" | "name">;

const GAUGES: Record<GaugeKey, { name: string; help: string }> = {
  utilization: { name: "streamsink_gpu_utilization_ratio", help: "Fraction of the last sample period a kernel ran on the GPU" },
  memoryUtilization: { name: "streamsink_gpu_memory_utilization_ratio", help: "Fraction of the last sample period device memory was read or written" },
  memoryUsedBytes: { name: "streamsink_gpu_memory_used_bytes", help: "GPU memory in use" },
  memoryTotalBytes: { name: "streamsink_gpu_memory_total_bytes", help: "GPU memory in total" },
  powerWatts: { name: "streamsink_gpu_power_watts", help: "GPU power draw" },
  powerLimitWatts: { name: "streamsink_gpu_power_limit_watts", help: "GPU power limit" },
  temperatureCelsius: { name: "streamsink_gpu_temperature_celsius", help: "GPU core temperature" },
};

export class GpuProbe {
  readonly binary: string | undefined;
  readonly timeoutMs: number;
  readonly #gauges: Record<GaugeKey, Gauge>;
  readonly #devices: Gauge;
  readonly #failures: Counter;
  /** False once nvidia-smi turned out not to exist: it will not appear later. */
  #available: boolean;
  #lastError: string | undefined;
  #inFlight: Promise<void> | undefined;

  constructor(binary: string | undefined, timeoutMs: number, registry: Registry) {
    this.binary = binary;
    this.timeoutMs = timeoutMs;
    this.#available = binary !== undefined;
    this.#gauges = Object.fromEntries(
      Object.entries(GAUGES).map(([key, g]) => [key, new Gauge({ ...g, labelNames: ["gpu", "uuid", "gpu_name"] as const, registers: [registry] })]),
    ) as Record<GaugeKey, Gauge>;
    this.#devices = new Gauge({ name: "streamsink_sidecar_gpu_devices", help: "GPUs nvidia-smi reported at the last scrape (0 without a GPU)", registers: [registry] });
    this.#failures = new Counter({
      name: "streamsink_sidecar_gpu_probe_failures_total",
      help: "nvidia-smi runs that failed or timed out (a missing nvidia-smi is not counted)",
      registers: [registry],
    });
  }

  /** Whether nvidia-smi is (still) expected to answer. */
  get available(): boolean {
    return this.#available;
  }

  get lastError(): string | undefined {
    return this.#lastError;
  }

  /** Runs nvidia-smi and sets the GPU gauges; concurrent callers share one run. */
  sample(): Promise<void> {
    this.#inFlight ??= this.#sampleNow().finally(() => (this.#inFlight = undefined));
    return this.#inFlight;
  }

  async #sampleNow(): Promise<void> {
    if (!this.#available || this.binary === undefined) {
      this.#devices.set(0);
      return;
    }
    let samples: GpuSample[];
    try {
      samples = parseNvidiaSmiCsv(await run(this.binary, [`--query-gpu=${GPU_QUERY_FIELDS.join(",")}`, "--format=csv,noheader,nounits"], this.timeoutMs));
      this.#lastError = undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        this.#available = false;
        this.#lastError = `${this.binary} not found: no GPU metrics`;
      } else {
        this.#failures.inc();
        this.#lastError = (err as Error).message;
      }
      samples = [];
    }
    for (const g of Object.values(this.#gauges)) g.reset();
    for (const s of samples) {
      const labels = { gpu: s.index, uuid: s.uuid, gpu_name: s.name };
      for (const key of Object.keys(GAUGES) as GaugeKey[]) {
        const v = s[key];
        if (v !== undefined) this.#gauges[key].set(labels, v);
      }
    }
    this.#devices.set(samples.length);
  }
}

function run(binary: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const e = err as NodeJS.ErrnoException & { killed?: boolean };
        if (e.code === "ENOENT") return reject(err);
        const detail = (stderr || stdout).trim().split("\n")[0] ?? "";
        const how = e.killed ? `timed out after ${timeoutMs}ms` : `exited with ${String(e.code ?? "an error")}`;
        reject(new Error(`${binary} ${how}${detail ? `: ${detail}` : ""}`));
      } else {
        resolve(stdout);
      }
    });
  });
}
