/**
 * Redis going away degrades the worker visibly (grpc.health.v1 service
 * "streamsink.snapshots" NOT_SERVING) while it keeps serving requests, and
 * it recovers by itself when Redis is back.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { loadWorkerConfig } from "../../services/worker/config.js";
import { createLogger } from "../../services/worker/logger.js";
import { SNAPSHOT_HEALTH, Worker } from "../../services/worker/worker.js";
import { modelDir, ROOT } from "../helpers/fixtures.js";
import { type RedisHandle, startRedis } from "../helpers/infra.js";

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("degraded health", () => {
  let redis: RedisHandle;
  let worker: Worker | undefined;
  afterAll(async () => {
    await worker?.stop(1000);
    await redis?.stop();
  });

  it("reports the snapshot store down and up while serving throughout", async () => {
    redis = await startRedis();
    const config = loadWorkerConfig(
      ["--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--redis-url", redis.url],
      {},
    );
    worker = await Worker.start(config, { log: createLogger("error") });
    const client = await StreamsinkClient.connect(worker.advertiseAddress);
    expect(await client.health(SNAPSHOT_HEALTH)).toBe("SERVING");
    await client.append({ sessionId: "while-down", input: { tokens: [1, 2, 3] } });

    execFileSync("bash", [join(ROOT, "deploy", "local", "redis.sh"), "stop", "--data-dir", redis.dataDir], { stdio: "pipe" });
    await until("degraded", async () => (await client.health(SNAPSHOT_HEALTH)) === "NOT_SERVING");
    expect(await client.health()).toBe("SERVING");
    // Sessions it holds keep working; an unknown one cannot be restored yet: UNAVAILABLE, retry.
    const r = await client.append({ sessionId: "while-down", input: { tokens: [4, 5] } });
    expect(r.tokensSeen).toBe(5);
    await expect(client.append({ sessionId: "new-while-down", input: { tokens: [1] } })).rejects.toMatchObject({ code: 14 });

    await redis.restart();
    await until("recovered", async () => (await client.health(SNAPSHOT_HEALTH)) === "SERVING");
    client.close();
  });
});
