/**
 * Real worker processes (`streamsink serve` from dist/) for cluster tests:
 * free ports, per-test topics and Redis prefix through env, readiness from the
 * gRPC health check, stdout/stderr kept for failure messages.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { join } from "node:path";

import { freePort } from "../../services/free-port.js";
import { type ConnectOptions, StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { ROOT } from "./fixtures.js";

export function buildDist(): void {
  execFileSync("npx", ["tsc", "-p", "tsconfig.json"], { cwd: ROOT, stdio: "pipe" });
}

/**
 * Environment of a cluster worker on the llama-gqa fixture (cache 4+28): the
 * given Kafka brokers and Redis, topics and group named after `topic`, 6
 * input partitions.
 */
export function clusterWorkerEnv(model: string, brokers: string, redisUrl: string, topic: string): Record<string, string> {
  return {
    STREAMSINK_MODEL: model,
    STREAMSINK_KAFKA_BROKERS: brokers,
    STREAMSINK_REDIS_URL: redisUrl,
    STREAMSINK_KAFKA_INPUT_TOPIC: `${topic}.input`,
    STREAMSINK_KAFKA_OUTPUT_TOPIC: `${topic}.output`,
    STREAMSINK_KAFKA_DEAD_LETTER_TOPIC: `${topic}.dlq`,
    STREAMSINK_KAFKA_GROUP: `${topic}-workers`,
    STREAMSINK_KAFKA_PARTITIONS: "6",
    STREAMSINK_SINKS: "4",
    STREAMSINK_WINDOW: "28",
  };
}

export { freePort };

export interface WorkerProcess {
  readonly address: string;
  readonly proc: ChildProcess;
  readonly logs: string[];
  /** SIGTERM and wait for exit (graceful hand-over). */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  exited: Promise<number | null>;
}

/** `connect`: how the readiness check reaches the worker (TLS credentials for a TLS worker). */
export async function startWorker(env: Record<string, string>, args: string[] = [], connect: ConnectOptions = {}): Promise<WorkerProcess> {
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const logs: string[] = [];
  const proc = spawn(
    process.execPath,
    [join(ROOT, "dist", "services", "cli", "main.js"), "serve", "--grpc-host", "127.0.0.1", "--grpc-port", String(port), "--metrics-port", "0", ...args],
    { cwd: ROOT, env: { ...process.env, STREAMSINK_THREADS: "1", ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  proc.stdout!.on("data", (d: Buffer) => logs.push(d.toString()));
  proc.stderr!.on("data", (d: Buffer) => logs.push(d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  let healthy = false;
  const deadline = Date.now() + 60_000;
  while (!healthy) {
    if (proc.exitCode !== null) throw new Error(`worker exited with ${proc.exitCode} before serving:\n${logs.join("")}`);
    if (Date.now() > deadline) throw new Error(`worker did not become healthy:\n${logs.join("")}`);
    try {
      const client = await StreamsinkClient.connect(address, { ...connect, readyTimeoutMs: 1000 });
      healthy = (await client.health()) === "SERVING";
      client.close();
    } catch {
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return {
    address,
    proc,
    logs,
    exited,
    stop: async () => {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      return exited;
    },
    kill: async () => {
      if (proc.exitCode === null) proc.kill("SIGKILL");
      await exited;
    },
  };
}
