/**
 * `streamsink load` against a real embedded worker (in process, loopback):
 * it drives the sessions, counts tokens, samples the worker's memory from its
 * metrics endpoint and reports no errors; it refuses non-loopback targets.
 * Nothing here asserts on speed.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { runLoad } from "../../services/cli/load.js";
import { UsageError } from "../../services/cli/usage-error.js";
import { loadWorkerConfig } from "../../services/worker/config.js";
import { createLogger } from "../../services/worker/logger.js";
import { Worker } from "../../services/worker/worker.js";
import { modelDir } from "../helpers/fixtures.js";
import { securityDir, TOKENS } from "./security-helpers.js";

describe("streamsink load", () => {
  let worker: Worker;
  const sec = securityDir();
  const tokenFile = (token: string) => {
    const file = join(sec.dir, `token-${token.length}-${token.slice(0, 4)}`);
    writeFileSync(file, token);
    return file;
  };
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "load-"));
    const args = ["--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--snapshot-dir", dir, "--sinks", "4", "--window", "28", "--tenants-file", sec.tenantsFile];
    worker = await Worker.start(loadWorkerConfig(args, {}), { log: createLogger("error") });
    // The metrics endpoint is off with port 0; serve it on a free port for the sampler.
    worker.metricsPort = await worker.metrics.listen("127.0.0.1", 0);
  });
  afterAll(async () => {
    await worker?.stop();
  });

  it("drives sessions for the time given and reports throughput, latency, memory and no errors", async () => {
    const lines: string[] = [];
    const report = (await runLoad(
      ["--server", worker.advertiseAddress, "--sessions", "3", "--minutes", "0.05", "--generate", "4", "--append-words", "8", "--token-file", tokenFile(TOKENS.acme),
        "--metrics-url", `http://127.0.0.1:${worker.metricsPort}/metrics`, "--sample-seconds", "0.5"],
      (l) => lines.push(l),
    )) as { grpc: { requests: number; errors: Record<string, number>; tokens_generated: number; tokens_appended: number; generate_ms_p99: number }; rss: { samples: unknown[] } };
    expect(report.grpc.errors).toEqual({});
    expect(report.grpc.requests).toBeGreaterThanOrEqual(6);
    expect(report.grpc.tokens_generated).toBeGreaterThan(0);
    expect(report.grpc.tokens_appended).toBeGreaterThan(0);
    expect(report.grpc.generate_ms_p99).toBeGreaterThan(0);
    expect(report.rss.samples.length).toBeGreaterThanOrEqual(2);
    expect(lines.join("\n")).toContain('"tokens_per_second"');
  });

  it("counts refused calls as errors by status (a bad token: UNAUTHENTICATED)", async () => {
    const report = (await runLoad(["--server", worker.advertiseAddress, "--sessions", "1", "--minutes", "0.05", "--token-file", tokenFile("wrong-token-0123456789"), "--worker-pid", String(process.pid)], () => undefined)) as {
      grpc: { errors: Record<string, number> };
      rss: { first_mb: number };
    };
    expect(report.grpc.errors.UNAUTHENTICATED).toBeGreaterThan(0);
    // --worker-pid reads the resident memory of that process from /proc (here the worker runs in this process).
    expect(report.rss.first_mb).toBeGreaterThan(10);
  });

  it("refuses non-loopback targets and unbounded runs", async () => {
    await expect(runLoad(["--server", "10.1.2.3:50051"], () => undefined)).rejects.toBeInstanceOf(UsageError);
    await expect(runLoad(["--server", "127.0.0.1:1", "--sessions", "5000"], () => undefined)).rejects.toThrow(/sessions/);
    await expect(runLoad(["--server", "127.0.0.1:1", "--minutes", "1000"], () => undefined)).rejects.toThrow(/minutes/);
  });
});
