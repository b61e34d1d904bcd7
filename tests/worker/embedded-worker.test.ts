/**
 * The embedded worker (no Kafka, no Redis): serves gRPC, snapshots sessions
 * to its local directory, and after a restart resumes them where they were.
 */
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { loadWorkerConfig } from "../../services/worker/config.js";
import { createLogger } from "../../services/worker/logger.js";
import { Worker } from "../../services/worker/worker.js";
import { loadGolden, modelDir } from "../helpers/fixtures.js";

const ids = loadGolden("llama-gqa").cases[0]!.ids;

describe("embedded worker", () => {
  const dir = mkdtempSync(join(tmpdir(), "embedded-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const args = ["--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--snapshot-dir", dir, "--sinks", "4", "--window", "28"];
  const quiet = createLogger("error");

  it("keeps sessions across a restart through its snapshot directory, and rejects a corrupt snapshot", async () => {
    let worker = await Worker.start(loadWorkerConfig(args, {}), { log: quiet });
    let client = await StreamsinkClient.connect(worker.advertiseAddress);
    await client.append({ sessionId: "keep", input: { tokens: ids.slice(0, 90) } });
    await client.append({ sessionId: "broken", input: { tokens: ids.slice(0, 10) } });
    const before: number[] = [];
    for await (const e of client.generate({ sessionId: "keep", maxNewTokens: 5 })) if (e.type === "token") before.push(e.id);
    client.close();
    await worker.stop();
    const files = readdirSync(dir).filter((f) => f.endsWith(".snap"));
    expect(files).toHaveLength(2);

    // Reference: the same session never interrupted continues like this.
    const reference = await Worker.start(loadWorkerConfig([...args, "--snapshot-dir", join(dir, "ref")], {}), { log: quiet });
    const rc = await StreamsinkClient.connect(reference.advertiseAddress);
    await rc.append({ sessionId: "keep", input: { tokens: ids.slice(0, 90) } });
    for await (const e of rc.generate({ sessionId: "keep", maxNewTokens: 5 })) void e;
    const expected: number[] = [];
    for await (const e of rc.generate({ sessionId: "keep", maxNewTokens: 8 })) if (e.type === "token") expected.push(e.id);
    rc.close();
    await reference.stop();

    worker = await Worker.start(loadWorkerConfig(args, {}), { log: quiet });
    client = await StreamsinkClient.connect(worker.advertiseAddress);
    const keepInfo = await client.getSession("keep").catch(() => undefined);
    // Sessions restore on first use; GetSession does not create one.
    expect(keepInfo).toBeUndefined();
    const after: number[] = [];
    for await (const e of client.generate({ sessionId: "keep", maxNewTokens: 8 })) if (e.type === "token") after.push(e.id);
    expect(after).toEqual(expected);
    expect((await client.getSession("keep")).tokensSeen).toBe(90 + 5 + 8);
    client.close();
    await worker.stop();

    // Corrupt snapshots are detected: that session starts empty, the worker serves on.
    for (const f of readdirSync(dir).filter((x) => x.endsWith(".snap"))) writeFileSync(join(dir, f), Buffer.from("SSNKSNAP garbage"));
    worker = await Worker.start(loadWorkerConfig(args, {}), { log: quiet });
    client = await StreamsinkClient.connect(worker.advertiseAddress);
    const r = await client.append({ sessionId: "broken", input: { tokens: [1, 2, 3] } });
    expect(r.tokensSeen).toBe(3);
    client.close();
    await worker.stop();
  });
});
