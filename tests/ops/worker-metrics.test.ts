// WorkerMetrics without a worker: what each hook and scrape-time source turns
// into, read back through the registry's exposition text.
import { describe, expect, it } from "vitest";

import type { HostedSessionInfo } from "../../services/worker/session-host.js";
import type { SnapshotStats } from "../../services/worker/snapshotter.js";
import { type HostSource, WorkerMetrics } from "../../services/worker/metrics.js";
import { type Exposition, parseExposition, samplesOf, valueOf } from "./prom-text.js";

async function scrape(m: WorkerMetrics): Promise<Exposition> {
  return parseExposition(await m.registry.metrics());
}

class FakeHost implements HostSource {
  sessions = new Map<string, HostedSessionInfo>();
  get sessionCount(): number {
    return this.sessions.size;
  }
  sessionIds(): string[] {
    return [...this.sessions.keys()];
  }
  async info(id: string): Promise<HostedSessionInfo | undefined> {
    return this.sessions.get(id);
  }
  async infoAll(): Promise<HostedSessionInfo[]> {
    return [...this.sessions.values()];
  }
  put(session: string, tokensSeen: number, cacheFill: number, capacity: number): void {
    this.sessions.set(session, { session, policy: "sinks", sinks: 4, window: capacity - 4, cacheFill, capacity, tokensSeen });
  }
}

describe("WorkerMetrics", () => {
  it("names every family streamsink_* with a unit or _total suffix where it measures one", async () => {
    const e = await scrape(new WorkerMetrics());
    const families = [...e.types.keys()];
    expect(families.length).toBeGreaterThan(30);
    for (const f of families) expect(f).toMatch(/^streamsink_/);
    for (const [f, t] of e.types) if (t === "counter") expect(f).toMatch(/_total$/);
    for (const [f, t] of e.types) if (t === "histogram") expect(f).toMatch(/_(seconds|sessions|tokens|bytes)$/);
  });

  it("times the first token and the gaps between tokens of a generation", async () => {
    const m = new WorkerMetrics();
    const op = m.observeOp({ kind: "generate" });
    for (let i = 0; i < 4; i++) op.event({ kind: "token", session: "s", requestId: "r", index: i, token: 7, text: "x" });
    op.event({ kind: "finished", session: "s", requestId: "r", reason: "length", promptTokens: 3, generatedTokens: 4, text: "xxxx" });
    op.done();
    op.done();
    const e = await scrape(m);
    expect(valueOf(e, "streamsink_time_to_first_token_seconds_count")).toBe(1);
    expect(valueOf(e, "streamsink_decode_token_seconds_count")).toBe(3);
    expect(valueOf(e, "streamsink_tokens_generated_total")).toBe(4);
    expect(valueOf(e, "streamsink_tokens_appended_total")).toBe(3);
    expect(valueOf(e, "streamsink_requests_total", { kind: "generate", outcome: "ok" })).toBe(1);
    expect(valueOf(e, "streamsink_request_duration_seconds_count", { kind: "generate" })).toBe(1);
  });

  it("labels a failed op with its error code", async () => {
    const m = new WorkerMetrics();
    m.observeOp({ kind: "append" }).done(Object.assign(new Error("full"), { code: "LIMIT_EXCEEDED" }));
    m.observeOp({ kind: "append" }).done(new Error("no code"));
    m.observeOp({ kind: "append" }).done(Object.assign(new Error("odd"), { code: "not a code!" }));
    const e = await scrape(m);
    expect(valueOf(e, "streamsink_requests_total", { kind: "append", outcome: "limit_exceeded" })).toBe(1);
    expect(valueOf(e, "streamsink_requests_total", { kind: "append", outcome: "error" })).toBe(2);
  });

  it("records engine steps", async () => {
    const m = new WorkerMetrics();
    m.onStep(3, 130, 12);
    const e = await scrape(m);
    expect(valueOf(e, "streamsink_engine_step_seconds_sum")).toBeCloseTo(0.012, 9);
    expect(valueOf(e, "streamsink_engine_step_batch_sessions_sum")).toBe(3);
    expect(valueOf(e, "streamsink_engine_step_batch_tokens_bucket", { le: "256" })).toBe(1);
    expect(valueOf(e, "streamsink_engine_step_batch_tokens_bucket", { le: "128" })).toBe(0);
  });

  it("reads cache fill and counts evictions from the held sessions at each scrape", async () => {
    const m = new WorkerMetrics();
    const host = new FakeHost();
    m.attach({ host });
    host.put("a", 10, 10, 64);
    host.put("b", 100, 64, 64);
    let e = await scrape(m);
    expect(valueOf(e, "streamsink_active_sessions")).toBe(2);
    expect(valueOf(e, "streamsink_cache_fill_tokens")).toBe(74);
    expect(valueOf(e, "streamsink_cache_capacity_tokens")).toBe(128);
    expect(valueOf(e, "streamsink_cache_full_sessions")).toBe(1);
    expect(valueOf(e, "streamsink_cache_evicted_tokens_total")).toBe(36);
    host.put("a", 80, 64, 64);
    host.put("b", 110, 64, 64);
    e = await scrape(m);
    expect(valueOf(e, "streamsink_cache_evicted_tokens_total")).toBe(36 + 16 + 10);
    expect(valueOf(e, "streamsink_cache_full_sessions")).toBe(2);
    // A session that left and a new one: only the new one's evictions add.
    host.sessions.delete("b");
    host.put("c", 70, 64, 64);
    e = await scrape(m);
    expect(valueOf(e, "streamsink_cache_evicted_tokens_total")).toBe(62 + 6);
    expect(valueOf(e, "streamsink_active_sessions")).toBe(2);
  });

  it("mirrors the snapshotter's and the gateway's counts, and times snapshots and restores", async () => {
    const m = new WorkerMetrics();
    const stats: SnapshotStats = { saved: 2, savedBytes: 5000, failed: 1, restored: 1, rejected: 0 };
    let forwarded = 4;
    m.attach({ snapshots: { stats }, forwardedCalls: () => forwarded });
    m.snapshotSaved(2500, 0.02);
    m.snapshotSaved(2500, 0.03);
    m.snapshotRestored(0.01);
    let e = await scrape(m);
    expect(valueOf(e, "streamsink_snapshots_saved_total")).toBe(2);
    expect(valueOf(e, "streamsink_snapshot_written_bytes_total")).toBe(5000);
    expect(valueOf(e, "streamsink_snapshot_failures_total")).toBe(1);
    expect(valueOf(e, "streamsink_snapshot_restores_total")).toBe(1);
    expect(valueOf(e, "streamsink_snapshot_rejected_total")).toBe(0);
    expect(valueOf(e, "streamsink_grpc_forwarded_calls_total")).toBe(4);
    expect(valueOf(e, "streamsink_snapshot_save_seconds_count")).toBe(2);
    expect(valueOf(e, "streamsink_snapshot_size_bytes_sum")).toBe(5000);
    expect(valueOf(e, "streamsink_snapshot_restore_seconds_count")).toBe(1);
    stats.saved = 5;
    stats.rejected = 1;
    forwarded = 9;
    e = await scrape(m);
    expect(valueOf(e, "streamsink_snapshots_saved_total")).toBe(5);
    expect(valueOf(e, "streamsink_snapshot_rejected_total")).toBe(1);
    expect(valueOf(e, "streamsink_grpc_forwarded_calls_total")).toBe(9);
    // The source restarted from zero: the counter keeps growing from there.
    forwarded = 2;
    e = await scrape(m);
    expect(valueOf(e, "streamsink_grpc_forwarded_calls_total")).toBe(11);
  });

  it("keeps fetch lag only for the partitions the worker owns", async () => {
    const m = new WorkerMetrics();
    m.setAssignedPartitions([0, 1, 2]);
    m.setFetchLag(0, 5);
    m.setFetchLag(2, 7);
    m.setFetchLag(1, -1);
    let e = await scrape(m);
    expect(valueOf(e, "streamsink_assigned_partitions")).toBe(3);
    expect(samplesOf(e, "streamsink_kafka_fetch_lag_records").map((s) => [s.labels.partition, s.value])).toEqual([
      ["0", 5],
      ["2", 7],
      ["1", 0],
    ]);
    m.setAssignedPartitions([2]);
    e = await scrape(m);
    expect(samplesOf(e, "streamsink_kafka_fetch_lag_records").map((s) => s.labels.partition)).toEqual(["2"]);
    expect(valueOf(e, "streamsink_assigned_partitions")).toBe(1);
  });

  it("counts dead-lettered records", async () => {
    const m = new WorkerMetrics();
    m.deadLettered.inc();
    expect(valueOf(await scrape(m), "streamsink_dead_letter_records_total")).toBe(1);
  });
});
