/**
 * Redis over TLS with an ACL user, against a real redis-server started here
 * with only a TLS port (certificates from an openssl-made CA) and the default
 * user switched off. A worker keeps its snapshots there and a second worker
 * restores them; a wrong password, a plaintext connection or a client that
 * does not trust the CA gets nothing, and the password never shows in the
 * error a failed start reports.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { loadWorkerConfig } from "../../services/worker/config.js";
import { createLogger } from "../../services/worker/logger.js";
import { Worker } from "../../services/worker/worker.js";
import { loadGolden, modelDir } from "../helpers/fixtures.js";
import { freePort } from "../helpers/worker-process.js";
import { issue, makeCa } from "./test-ca.js";

const ids = loadGolden("llama-gqa").cases[0]!.ids;
const PASSWORD = "redis-acl-password-0123456789";

describe("Redis with TLS and an ACL user", () => {
  const ca = makeCa();
  const other = makeCa("untrusted CA");
  const server = issue(ca, "redis");
  let proc: ChildProcess;
  let port: number;
  const logs: string[] = [];

  beforeAll(async () => {
    port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "redis-tls-"));
    proc = spawn(
      "redis-server",
      [
        "--port", "0", "--tls-port", String(port), "--bind", "127.0.0.1",
        "--tls-cert-file", server.cert, "--tls-key-file", server.key, "--tls-ca-cert-file", ca.caCert, "--tls-auth-clients", "no",
        "--dir", dir, "--save", "", "--appendonly", "no",
        "--user", "default", "off",
        "--user", "streamsink", "on", `>${PASSWORD}`, "~*", "&*", "+@all",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    proc.stdout!.on("data", (d: Buffer) => logs.push(d.toString()));
    proc.stderr!.on("data", (d: Buffer) => logs.push(d.toString()));
    const ready = new Promise<void>((resolve, reject) => {
      const check = (d: Buffer) => {
        if (d.toString().includes("Ready to accept connections")) resolve();
      };
      proc.stdout!.on("data", check);
      proc.once("exit", (code) => reject(new Error(`redis-server exited with ${code}:\n${logs.join("")}`)));
    });
    await ready;
  });

  afterAll(() => {
    proc?.kill("SIGKILL");
  });

  const client = (options: Record<string, unknown>) => {
    const r = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false, ...options });
    r.on("error", () => undefined); // the outcome is read from connect() and ping()
    return r;
  };

  async function outcome(r: Redis): Promise<string> {
    try {
      await r.connect();
      return String(await r.ping());
    } catch (err) {
      return `refused: ${(err as Error).message}`;
    } finally {
      r.disconnect();
    }
  }

  it("lets in only the ACL user over TLS with the right CA", async () => {
    const tls = { ca: readFileSync(ca.caCert) };
    expect(await outcome(client({ tls, username: "streamsink", password: PASSWORD }))).toBe("PONG");
    expect(await outcome(client({ tls, username: "streamsink", password: "wrong-password-000" }))).toMatch(/refused/);
    expect(await outcome(client({ tls }))).toMatch(/refused|NOAUTH/);
    expect(await outcome(client({ tls: { ca: readFileSync(other.caCert) }, username: "streamsink", password: PASSWORD }))).toMatch(/refused/);
    expect(await outcome(client({ username: "streamsink", password: PASSWORD, connectTimeout: 2000 }))).toMatch(/refused/);
  });

  it("keeps a worker's snapshots there; another worker restores them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "redis-tls-worker-"));
    const args = [
      "--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--snapshot-dir", dir,
      "--sinks", "4", "--window", "28", "--redis-url", `rediss://127.0.0.1:${port}`, "--redis-tls-ca", ca.caCert, "--redis-username", "streamsink",
    ];
    const env = { STREAMSINK_REDIS_PASSWORD: PASSWORD };
    const quiet = createLogger("error");
    let worker = await Worker.start(loadWorkerConfig(args, env), { log: quiet, redisPrefix: "tls-test" });
    let c = await StreamsinkClient.connect(worker.advertiseAddress);
    await c.append({ sessionId: "kept", input: { tokens: ids.slice(0, 30) } });
    c.close();
    await worker.stop();

    const inspect = client({ tls: { ca: readFileSync(ca.caCert) }, username: "streamsink", password: PASSWORD });
    await inspect.connect();
    expect((await inspect.keys("tls-test*")).length).toBeGreaterThan(0);
    inspect.disconnect();

    worker = await Worker.start(loadWorkerConfig(args, env), { log: quiet, redisPrefix: "tls-test" });
    c = await StreamsinkClient.connect(worker.advertiseAddress);
    const r = await c.append({ sessionId: "kept", input: { tokens: ids.slice(30, 35) } });
    expect(r.tokensSeen).toBe(35);
    c.close();
    await worker.stop();
  });

  it("fails to start with a wrong password, without printing it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "redis-tls-bad-"));
    const wrong = "not-the-password-0123456789";
    const args = [
      "--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--snapshot-dir", dir,
      "--redis-url", `rediss://127.0.0.1:${port}`, "--redis-tls-ca", ca.caCert, "--redis-username", "streamsink",
    ];
    const lines: string[] = [];
    let error: unknown;
    try {
      await Worker.start(loadWorkerConfig(args, { STREAMSINK_REDIS_PASSWORD: wrong }), { log: createLogger("debug", {}, (l) => lines.push(l)) });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(Error);
    expect(String((error as Error).message)).toMatch(/WRONGPASS|invalid username-password/i);
    expect(String((error as Error).message) + lines.join("")).not.toContain(wrong);
  });
});
