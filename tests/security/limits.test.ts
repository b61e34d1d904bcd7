/**
 * Limits on a real embedded worker over gRPC: per-tenant sessions, input
 * size, generation length, request rate and open streams, global limits and
 * message size. Each refusal is RESOURCE_EXHAUSTED and counted in
 * streamsink_limit_rejections_total{limit,tenant}. Rates use a refill so
 * slow (one request per ~17 minutes) that no test run can see a refill: the
 * outcome never depends on timing.
 */
import { join } from "node:path";

import { status as Status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { TenantLimiter } from "../../services/security/tenant-limiter.js";
import { LimitExceededError } from "../../services/worker/errors.js";
import { loadWorkerConfig } from "../../services/worker/config.js";
import { createLogger } from "../../services/worker/logger.js";
import { Worker } from "../../services/worker/worker.js";
import { loadGolden, modelDir } from "../helpers/fixtures.js";
import { securityDir, statusOf, TOKENS } from "./security-helpers.js";

const ids = loadGolden("llama-gqa").cases[0]!.ids;
const SLOW = 0.001;

function metricValue(text: string, limit: string, tenant: string): number {
  const m = new RegExp(`streamsink_limit_rejections_total\\{limit="${limit}",tenant="${tenant}"\\} (\\d+)`).exec(text);
  return m ? Number(m[1]) : 0;
}

describe("TenantLimiter", () => {
  it("refills buckets with the clock it is given and releases stream slots once", () => {
    let now = 0;
    const limiter = new TenantLimiter({ defaults: { requestsPerSecond: 2, burst: 2, maxConcurrentStreams: 1 }, global: { maxConcurrentStreams: 2 }, now: () => now });
    limiter.takeRequest("a");
    limiter.takeRequest("a");
    expect(() => limiter.takeRequest("a")).toThrow(LimitExceededError);
    limiter.takeRequest("b"); // buckets are per tenant
    now += 500; // one request refilled at 2/s
    limiter.takeRequest("a");
    expect(() => limiter.takeRequest("a")).toThrow(/requests per second/);
    const release = limiter.openStream("a");
    expect(() => limiter.openStream("a")).toThrow(/streams open/);
    const other = limiter.openStream("b");
    expect(() => limiter.openStream("c")).toThrow(/this worker has its maximum of 2 streams/);
    release();
    release();
    expect(limiter.openStreams("a")).toBe(0);
    limiter.openStream("a");
    other();
  });
});

describe("limits on an embedded worker", () => {
  const sec = securityDir({
    acme: { maxSessions: 2, maxInputTokens: 40, maxNewTokens: 4, maxConcurrentStreams: 1 },
    beta: { requestsPerSecond: SLOW, burst: 3 },
  });
  let worker: Worker;
  const clients: StreamsinkClient[] = [];
  const connect = async (token: string) => {
    const c = await StreamsinkClient.connect(worker.advertiseAddress, { bearerToken: token });
    clients.push(c);
    return c;
  };
  const metrics = () => worker.metrics.registry.metrics();

  beforeAll(async () => {
    const args = [
      "--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
      "--snapshot-dir", join(sec.dir, "snapshots"), "--sinks", "4", "--window", "28",
      "--tenants-file", sec.tenantsFile, "--max-message-bytes", "4096", "--max-sessions", "5", "--max-input-tokens", "100",
    ];
    worker = await Worker.start(loadWorkerConfig(args, {}), { log: createLogger("error") });
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await worker?.stop();
  });

  it("caps a tenant's sessions, input size and generation length", async () => {
    const acme = await connect(TOKENS.acme);
    await acme.append({ sessionId: "a1", input: { tokens: ids.slice(0, 40) } });
    await acme.append({ sessionId: "a2", input: { tokens: ids.slice(0, 10) } });
    expect(await statusOf(acme.append({ sessionId: "a3", input: { tokens: ids.slice(0, 10) } }))).toBe(Status.RESOURCE_EXHAUSTED);
    // Held sessions stay usable; a close frees a slot.
    await acme.append({ sessionId: "a1", input: { tokens: ids.slice(0, 5) } });
    expect(await statusOf(acme.append({ sessionId: "a1", input: { tokens: ids.slice(0, 41) } }))).toBe(Status.RESOURCE_EXHAUSTED);
    expect(await statusOf(acme.append({ sessionId: "a1", input: { text: "word ".repeat(60) } }))).toBe(Status.RESOURCE_EXHAUSTED);
    expect(await statusOf((async () => {
      for await (const e of acme.generate({ sessionId: "a1", maxNewTokens: 5 })) void e;
    })())).toBe(Status.RESOURCE_EXHAUSTED);
    let generated = 0;
    for await (const e of acme.generate({ sessionId: "a1", maxNewTokens: 4 })) if (e.type === "token") generated++;
    expect(generated).toBe(4);
    await acme.closeSession("a2");
    await acme.append({ sessionId: "a3", input: { tokens: ids.slice(0, 10) } });
    // Another tenant is not held back by acme's limits.
    const beta = await connect(TOKENS.beta);
    await beta.append({ sessionId: "b1", input: { tokens: ids.slice(0, 60) } });
    const text = await metrics();
    expect(metricValue(text, "tenant_sessions", "acme")).toBe(1);
    expect(metricValue(text, "input_tokens", "acme")).toBe(2);
    expect(metricValue(text, "new_tokens", "acme")).toBe(1);
  });

  it("caps a tenant's request rate", async () => {
    const beta = await connect(TOKENS.beta);
    // beta spent one request in the previous test; two are left of the burst of 3.
    await beta.getSession("b1");
    await beta.append({ sessionId: "b1", input: { tokens: [5] } });
    expect(await statusOf(beta.getSession("b1"))).toBe(Status.RESOURCE_EXHAUSTED);
    expect(await statusOf(beta.append({ sessionId: "b1", input: { tokens: [5] } }))).toBe(Status.RESOURCE_EXHAUSTED);
    // acme has no rate limit and goes on.
    const acme = await connect(TOKENS.acme);
    for (let i = 0; i < 5; i++) await acme.getSession("a1");
    expect(metricValue(await metrics(), "rate", "beta")).toBe(2);
  });

  it("caps a tenant's open streams; ending a stream frees its slot", async () => {
    const acme = await connect(TOKENS.acme);
    const stream = acme.openStream();
    stream.append({ sessionId: "a1", input: { tokens: [7] }, requestId: "s1" });
    const events = stream[Symbol.asyncIterator]();
    expect((await events.next()).value).toMatchObject({ type: "append", requestId: "s1" });
    // The stream is open: a Generate (a second stream) is refused.
    expect(await statusOf((async () => {
      for await (const e of acme.generate({ sessionId: "a1", maxNewTokens: 1 })) void e;
    })())).toBe(Status.RESOURCE_EXHAUSTED);
    stream.end();
    expect((await events.next()).done).toBe(true);
    // The server releases the slot when the call ends; the client may see the end first.
    let code: number | undefined;
    for (let attempt = 0; attempt < 500; attempt++) {
      try {
        for await (const e of acme.generate({ sessionId: "a1", maxNewTokens: 1 })) void e;
        code = Status.OK;
        break;
      } catch (err) {
        code = (err as { code: number }).code;
        if (code !== Status.RESOURCE_EXHAUSTED) break;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    expect(code).toBe(Status.OK);
    expect(metricValue(await metrics(), "streams", "acme")).toBeGreaterThanOrEqual(1);
  });

  it("caps the worker's sessions over all tenants and the size of a message", async () => {
    const acme = await connect(TOKENS.acme);
    expect(await statusOf(acme.append({ sessionId: "a1", input: { text: "x".repeat(8192) } }))).toBe(Status.RESOURCE_EXHAUSTED);
    // 5 sessions per worker: acme holds a1 and a3, beta b1; delta (no tenant limits) gets two more.
    const delta = await connect(TOKENS.delta);
    await delta.append({ sessionId: "d1", input: { tokens: [1, 2] } });
    await delta.append({ sessionId: "d2", input: { tokens: [1, 2] } });
    expect(await statusOf(delta.append({ sessionId: "d3", input: { tokens: [1, 2] } }))).toBe(Status.RESOURCE_EXHAUSTED);
    expect(metricValue(await metrics(), "sessions", "delta")).toBe(1);
    await delta.closeSession("d2");
    await delta.append({ sessionId: "d3", input: { tokens: [1, 2] } });
    // The worker's own input limit (100 tokens) holds for a tenant without one.
    await delta.append({ sessionId: "d3", input: { tokens: ids.slice(0, 100) } });
    expect(await statusOf(delta.append({ sessionId: "d3", input: { tokens: ids.slice(0, 101) } }))).toBe(Status.RESOURCE_EXHAUSTED);
    expect(metricValue(await metrics(), "input_tokens", "delta")).toBe(1);
  });

  it("keeps a session's memory at its fixed cache however much is appended", async () => {
    const acme = await connect(TOKENS.acme);
    const rounds = 20;
    for (let i = 0; i < rounds; i++) await acme.append({ sessionId: "a1", input: { tokens: ids.slice(i, i + 40) } });
    const info = await acme.getSession("a1");
    expect(info.tokensSeen).toBeGreaterThan(rounds * 40);
    expect(info.capacity).toBe(32);
    expect(info.cacheFill).toBeLessThanOrEqual(info.capacity);
  });
});
