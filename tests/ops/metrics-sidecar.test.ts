// The metrics sidecar as a process: against a live worker (its metrics passed
// through, the last good values kept with a growing age when the worker dies),
// GPU metrics from an nvidia-smi stand-in replaying a real H100's answer (and
// cleanly absent without one), and consumer-group lag against a real Kafka,
// both with offsets set through the admin API and with a worker that consumes
// and commits.
import { randomUUID } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { Kafka, logLevel } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { type KafkaHandle, startKafka } from "../helpers/infra.js";
import { buildDist, freePort, startWorker, type WorkerProcess } from "../helpers/worker-process.js";
import { type Exposition, samplesOf, valueOf } from "./prom-text.js";
import { scrapeUntil, type SidecarProcess, startSidecar } from "./sidecar-process.js";

const tmp = mkdtempSync(join(tmpdir(), "streamsink-sidecar-test-"));
const running: Array<{ stop(): Promise<unknown> }> = [];

beforeAll(() => buildDist());
afterAll(async () => {
  for (const r of running.reverse()) await r.stop().catch(() => undefined);
  rmSync(tmp, { recursive: true, force: true });
});

async function sidecar(args: string[], env: Record<string, string> = {}): Promise<SidecarProcess> {
  const s = await startSidecar(args, env);
  running.push(s);
  return s;
}

const gpuSeries = (e: Exposition) => e.samples.filter((s) => s.name.startsWith("streamsink_gpu_"));

describe("metrics sidecar beside a live worker", () => {
  let worker: WorkerProcess;
  let metricsPort: number;
  let side: SidecarProcess;

  beforeAll(async () => {
    metricsPort = await freePort();
    // The helper passes --metrics-port 0; a later flag wins.
    worker = await startWorker({ STREAMSINK_SNAPSHOT_DIR: join(tmp, "snapshots") }, ["--metrics-port", String(metricsPort)]);
    running.push(worker);
    side = await sidecar(["--worker-metrics", `http://127.0.0.1:${metricsPort}/metrics`, "--nvidia-smi", join(tmp, "no-such-nvidia-smi")]);
  });

  it("serves the worker's metrics and its own in one valid exposition", async () => {
    const client = await StreamsinkClient.connect(worker.address);
    try {
      await client.append({ sessionId: "ops-a", input: { text: "A stream does not end." } });
      const events = [];
      for await (const e of client.generate({ sessionId: "ops-a", maxNewTokens: 5 })) events.push(e);
      expect(events.filter((e) => e.type === "token")).toHaveLength(5);
    } finally {
      client.close();
    }
    const e = await side.scrape();
    expect(valueOf(e, "streamsink_tokens_generated_total")).toBe(5);
    expect(valueOf(e, "streamsink_tokens_appended_total")).toBeGreaterThan(0);
    expect(valueOf(e, "streamsink_active_sessions")).toBe(1);
    expect(valueOf(e, "streamsink_engine_step_seconds_count")).toBeGreaterThanOrEqual(5);
    expect(valueOf(e, "streamsink_engine_step_batch_sessions_count")).toBeGreaterThanOrEqual(5);
    expect(valueOf(e, "streamsink_process_resident_memory_bytes")).toBeGreaterThan(0);
    expect(e.types.get("streamsink_engine_step_seconds")).toBe("histogram");
    expect(valueOf(e, "streamsink_sidecar_worker_up")).toBe(1);
    expect(valueOf(e, "streamsink_sidecar_worker_scrape_failures_total")).toBe(0);
    expect(valueOf(e, "streamsink_sidecar_worker_scrape_age_seconds")).toBeLessThan(5);
    expect(valueOf(e, "streamsink_sidecar_process_resident_memory_bytes")).toBeGreaterThan(0);
    expect(valueOf(e, "streamsink_sidecar_gpu_devices")).toBe(0);
    expect(gpuSeries(e)).toEqual([]);
    expect(valueOf(e, "streamsink_sidecar_gpu_probe_failures_total")).toBe(0);
    // No Kafka configured: no lag families at all.
    expect(e.types.has("streamsink_kafka_consumer_group_lag_records")).toBe(false);
    expect(await side.health()).toMatchObject({ status: "ok", worker: { up: true }, gpu: { enabled: false } });
  });

  it("keeps the last good worker values with a growing age when the worker dies", async () => {
    const before = await side.scrape();
    await worker.kill();
    const first = await side.scrape();
    expect(valueOf(first, "streamsink_sidecar_worker_up")).toBe(0);
    expect(valueOf(first, "streamsink_sidecar_worker_scrape_failures_total")).toBe(1);
    expect(valueOf(first, "streamsink_tokens_generated_total")).toBe(valueOf(before, "streamsink_tokens_generated_total"));
    expect(valueOf(first, "streamsink_active_sessions")).toBe(1);
    const ageFirst = valueOf(first, "streamsink_sidecar_worker_scrape_age_seconds")!;
    expect(ageFirst).toBeGreaterThan(0);
    const second = await side.scrape();
    expect(valueOf(second, "streamsink_sidecar_worker_scrape_age_seconds")!).toBeGreaterThan(ageFirst);
    expect(valueOf(second, "streamsink_sidecar_worker_scrape_failures_total")).toBe(2);
    expect(valueOf(second, "streamsink_tokens_generated_total")).toBe(5);
    const health = await side.health();
    expect(health).toMatchObject({ status: "ok", worker: { up: false } });
    expect((health.worker as { lastError: string }).lastError).toMatch(/ECONNREFUSED/);
  });

  it("answers 404 elsewhere and refuses writes", async () => {
    expect((await fetch(`${side.url}/nope`)).status).toBe(404);
    expect((await fetch(`${side.url}/metrics`, { method: "POST" })).status).toBe(405);
  });
});

describe("metrics sidecar GPU metrics", () => {
  const h100 = readFileSync(join(import.meta.dirname, "fixtures", "nvidia-smi-h100.csv"), "utf8");

  function fakeNvidiaSmi(name: string, body: string): string {
    const path = join(tmp, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`);
    chmodSync(path, 0o755);
    return path;
  }

  it("reports each GPU nvidia-smi lists, in base units", async () => {
    // What an H100 answered to the query, for two GPUs (the second one busy).
    const second = h100.replace(/^0, GPU-[^,]+/, "1, GPU-00000000-0000-0000-0000-000000000001").replace(", 0, 0, 0, ", ", 87, 41, 40960, ");
    const smi = fakeNvidiaSmi("nvidia-smi-h100", `cat <<'EOF'\n${h100.trim()}\n${second.trim()}\nEOF`);
    const side = await sidecar(["--worker-metrics", "http://127.0.0.1:1/metrics", "--nvidia-smi", smi]);
    const e = await side.scrape();
    expect(valueOf(e, "streamsink_sidecar_gpu_devices")).toBe(2);
    const gpu0 = { gpu: "0", uuid: "GPU-f2d5de32-5faa-a4d9-617c-c1349aae65e6", gpu_name: "NVIDIA H100 80GB HBM3" };
    expect(valueOf(e, "streamsink_gpu_memory_total_bytes", gpu0)).toBe(81559 * 1024 * 1024);
    expect(valueOf(e, "streamsink_gpu_memory_used_bytes", gpu0)).toBe(0);
    expect(valueOf(e, "streamsink_gpu_power_watts", gpu0)).toBeCloseTo(114.81, 6);
    expect(valueOf(e, "streamsink_gpu_power_limit_watts", gpu0)).toBe(700);
    expect(valueOf(e, "streamsink_gpu_temperature_celsius", gpu0)).toBe(34);
    expect(valueOf(e, "streamsink_gpu_utilization_ratio", gpu0)).toBe(0);
    expect(valueOf(e, "streamsink_gpu_utilization_ratio", { gpu: "1" })).toBeCloseTo(0.87, 9);
    expect(valueOf(e, "streamsink_gpu_memory_utilization_ratio", { gpu: "1" })).toBeCloseTo(0.41, 9);
    expect(valueOf(e, "streamsink_gpu_memory_used_bytes", { gpu: "1" })).toBe(40960 * 1024 * 1024);
    expect(samplesOf(e, "streamsink_gpu_power_watts")).toHaveLength(2);
    expect(await side.health()).toMatchObject({ gpu: { enabled: true } });
  });

  it("leaves out what a GPU does not report", async () => {
    const smi = fakeNvidiaSmi("nvidia-smi-na", `echo '0, GPU-1, Tesla T4, 3, 1, 300, 15360, [N/A], [N/A], 40'`);
    const side = await sidecar(["--worker-metrics", "http://127.0.0.1:1/metrics", "--nvidia-smi", smi]);
    const e = await side.scrape();
    expect(samplesOf(e, "streamsink_gpu_power_watts")).toEqual([]);
    expect(valueOf(e, "streamsink_gpu_temperature_celsius", { gpu: "0" })).toBe(40);
  });

  it("counts a failing nvidia-smi and shows no GPU series", async () => {
    const smi = fakeNvidiaSmi(
      "nvidia-smi-broken",
      "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9",
    );
    const side = await sidecar(["--worker-metrics", "http://127.0.0.1:1/metrics", "--nvidia-smi", smi]);
    const e = await side.scrape();
    expect(valueOf(e, "streamsink_sidecar_gpu_probe_failures_total")).toBe(1);
    expect(valueOf(e, "streamsink_sidecar_gpu_devices")).toBe(0);
    expect(gpuSeries(e)).toEqual([]);
    expect(((await side.health()).gpu as { lastError: string }).lastError).toMatch(/could not communicate/);
  });
});

describe("metrics sidecar consumer-group lag (real Kafka)", () => {
  let kafka: KafkaHandle;

  beforeAll(async () => {
    kafka = await startKafka();
    running.push(kafka);
  });

  function admin() {
    return new Kafka({ clientId: "ops-test", brokers: [kafka.brokers], logLevel: logLevel.NOTHING }).admin();
  }

  const lag = (e: Exposition, group: string, topic: string, partition: number) =>
    valueOf(e, "streamsink_kafka_consumer_group_lag_records", { group, topic, partition: String(partition) });

  it("reads end minus committed offset per partition, and keeps it when Kafka is gone", async () => {
    const topic = `ops-lag-${randomUUID()}`;
    const group = `ops-group-${randomUUID()}`;
    const a = admin();
    await a.connect();
    const producer = new Kafka({ clientId: "ops-test", brokers: [kafka.brokers], logLevel: logLevel.NOTHING }).producer();
    try {
      await a.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
      await producer.connect();
      const records = (partition: number, n: number) => Array.from({ length: n }, (_, i) => ({ partition, value: `r${i}` }));
      await producer.send({ topic, messages: [...records(0, 5), ...records(1, 2)] });
      await a.setOffsets({ groupId: group, topic, partitions: [{ partition: 0, offset: "3" }] });

      const side = await sidecar([
        "--worker-metrics",
        "http://127.0.0.1:1/metrics",
        "--nvidia-smi",
        "off",
        "--kafka-brokers",
        kafka.brokers,
        "--kafka-group",
        group,
        "--kafka-topic",
        topic,
        "--kafka-interval-ms",
        "200",
      ]);
      let e = await scrapeUntil(side, (x) => valueOf(x, "streamsink_sidecar_kafka_up") === 1, "a successful lag read");
      expect([0, 1, 2].map((p) => lag(e, group, topic, p))).toEqual([2, 2, 0]);
      expect(valueOf(e, "streamsink_kafka_consumer_group_committed_offset", { partition: "0", group })).toBe(3);
      expect(valueOf(e, "streamsink_kafka_consumer_group_committed_offset", { partition: "1", group })).toBeUndefined();
      expect([0, 1, 2].map((p) => valueOf(e, "streamsink_kafka_partition_end_offset", { topic, partition: String(p) }))).toEqual([5, 2, 0]);

      await producer.send({ topic, messages: records(1, 4) });
      e = await scrapeUntil(side, (x) => lag(x, group, topic, 1) === 6, "the lag of partition 1 grow to 6");
      expect(lag(e, group, topic, 0)).toBe(2);
      expect(await side.health()).toMatchObject({ kafka: { group, topic, up: true } });

      await producer.disconnect();
      await a.disconnect();
      await kafka.stop();
      e = await scrapeUntil(side, (x) => valueOf(x, "streamsink_sidecar_kafka_up") === 0, "the lag read fail", 60_000);
      expect([0, 1, 2].map((p) => lag(e, group, topic, p))).toEqual([2, 6, 0]);
      expect(valueOf(e, "streamsink_sidecar_kafka_lag_age_seconds")).toBeGreaterThan(0);
    } finally {
      await producer.disconnect().catch(() => undefined);
      await a.disconnect().catch(() => undefined);
    }
  });
});

describe("metrics sidecar beside a worker that consumes Kafka", () => {
  it("shows the group's lag fall to zero once the worker has committed its records", async () => {
    const kafka = await startKafka();
    running.push(kafka);
    const id = randomUUID();
    const topics = { input: `ops-in-${id}`, output: `ops-out-${id}`, dlq: `ops-dlq-${id}` };
    const group = `ops-workers-${id}`;
    const metricsPort = await freePort();
    const worker = await startWorker(
      {
        STREAMSINK_KAFKA_BROKERS: kafka.brokers,
        STREAMSINK_KAFKA_INPUT_TOPIC: topics.input,
        STREAMSINK_KAFKA_OUTPUT_TOPIC: topics.output,
        STREAMSINK_KAFKA_DEAD_LETTER_TOPIC: topics.dlq,
        STREAMSINK_KAFKA_GROUP: group,
        STREAMSINK_KAFKA_PARTITIONS: "3",
        STREAMSINK_SNAPSHOT_DIR: join(tmp, `snapshots-${id}`),
      },
      ["--metrics-port", String(metricsPort)],
    );
    running.push(worker);
    const side = await sidecar([
      "--worker-metrics",
      `http://127.0.0.1:${metricsPort}/metrics`,
      "--nvidia-smi",
      "off",
      "--kafka-brokers",
      kafka.brokers,
      "--kafka-group",
      group,
      "--kafka-topic",
      topics.input,
      "--kafka-interval-ms",
      "200",
    ]);
    const client = await StreamsinkClient.connect(worker.address);
    const sessions = ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6"];
    try {
      for (const sessionId of sessions) await client.append({ sessionId, input: { text: `records for ${sessionId}` } });
    } finally {
      client.close();
    }
    const e = await scrapeUntil(
      side,
      (x) => {
        const committed = samplesOf(x, "streamsink_kafka_consumer_group_committed_offset").reduce((n, s) => n + s.value, 0);
        return committed === sessions.length && samplesOf(x, "streamsink_kafka_consumer_group_lag_records").every((s) => s.value === 0);
      },
      "every record committed and no lag",
      60_000,
    );
    expect(samplesOf(e, "streamsink_kafka_consumer_group_lag_records")).toHaveLength(3);
    expect(samplesOf(e, "streamsink_kafka_partition_end_offset").reduce((n, s) => n + s.value, 0)).toBe(sessions.length);
    expect(valueOf(e, "streamsink_assigned_partitions")).toBe(3);
    expect(valueOf(e, "streamsink_sidecar_worker_up")).toBe(1);
  });
});
