// Real Kafka and Redis for integration tests, run on loopback from deploy/local/*.sh
// (Kafka 3.9 KRaft from its Maven Central jars with the machine's Java; Debian's
// redis-server). Each start gets free ports and a fresh temporary data dir.
// When something the services need is missing, start* rejects with an error that
// names it: tests fail, they never skip.
import { spawn } from "node:child_process";
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { Kafka, logLevel } from "kafkajs";
import { ROOT } from "./fixtures.js";

const KAFKA_SH = join(ROOT, "deploy", "local", "kafka.sh");
const REDIS_SH = join(ROOT, "deploy", "local", "redis.sh");

export interface KafkaHandle {
  /** Bootstrap address, `127.0.0.1:PORT`; the same after restart(). */
  readonly brokers: string;
  /** Storage, config, pid file and logs (`logs/server.log`). */
  readonly dataDir: string;
  /** Stop the broker and delete its data dir. Idempotent. */
  stop(): Promise<void>;
  /**
   * Stop (SIGTERM, or SIGKILL with `kill: true`) and start again: same ports, same data.
   * Resolves once every partition has its leader back. After a kill the broker's old
   * registration must expire first (broker.session.timeout.ms=3000), so that restart takes ~4s.
   */
  restart(opts?: { kill?: boolean }): Promise<void>;
}

export interface RedisHandle {
  /** `redis://127.0.0.1:PORT`; the same after restart(). */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** Stop the server and delete its data dir. Idempotent. */
  stop(): Promise<void>;
  /**
   * Stop and start again on the same port. By default the data survives (SHUTDOWN SAVE
   * writes dump.rdb, which the new server loads); `kill: true` is a crash (SIGKILL):
   * what was written since the last save is lost, unless started with `appendonly`.
   */
  restart(opts?: { kill?: boolean }): Promise<void>;
}

interface RunResult {
  stdout: string;
  stderr: string;
}

function runScript(script: string, args: string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [script, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`could not run bash ${script}: ${err.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve({ stdout, stderr });
      const why = signal ? `was killed (${signal}${signal === "SIGKILL" ? `, timeout ${timeoutMs}ms?` : ""})` : `exited ${code}`;
      reject(new Error(`bash ${script} ${args.join(" ")} ${why}:\n${stderr.trim()}`));
    });
  });
}

/** Whether an executable named `cmd` is on PATH (as the scripts will see it). */
export function onPath(cmd: string): boolean {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return true;
    } catch {
      // not here
    }
  }
  return false;
}

function lastLine(s: string): string {
  const lines = s.trim().split("\n");
  return (lines[lines.length - 1] ?? "").trim();
}

function readEnvFile(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

// Servers this process started, killed when it exits (a test that forgot stop() or crashed).
const live = new Map<string, string>(); // data dir -> pid file
let exitHookInstalled = false;
function track(dataDir: string, pidFile: string): void {
  live.set(dataDir, pidFile);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const [dir, pidFile] of live) {
      try {
        const pid = Number(readFileSync(pidFile, "utf8").trim());
        if (pid > 0) process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  });
}

// ---------------------------------------------------------------- Kafka

function kafkaLibsDir(): string {
  const infra = process.env.STREAMSINK_INFRA_DIR ?? join(homedir(), ".cache", "streamsink");
  return process.env.KAFKA_LIBS ?? join(infra, "kafka-3.9", "libs");
}

let kafkaFetched: Promise<void> | undefined;

/** Check Java (and Maven when the jars are not cached yet), then fetch the jars once per process. */
function ensureKafka(): Promise<void> {
  const missing: string[] = [];
  if (!onPath("java")) missing.push("Java 17 (`java` is not on PATH; apt-get install -y openjdk-17-jre-headless)");
  const libs = kafkaLibsDir();
  if (!existsSync(join(libs, ".complete")) && !onPath("mvn")) {
    missing.push(
      `Maven (\`mvn\` is not on PATH, and the Kafka jars are not cached in ${libs}; apt-get install -y maven, then bash deploy/local/kafka.sh fetch)`,
    );
  }
  if (missing.length) {
    return Promise.reject(new Error(`startKafka: cannot run Kafka here, missing: ${missing.join("; ")}`));
  }
  // The first call downloads from Maven Central (seconds to a minute); later calls are a cheap check.
  kafkaFetched ??= runScript(KAFKA_SH, ["fetch"], 15 * 60_000).then(
    () => undefined,
    (err: Error) => {
      kafkaFetched = undefined;
      throw new Error(`startKafka: fetching the Kafka jars failed: ${err.message}`);
    },
  );
  return kafkaFetched;
}

/**
 * After a restart the broker reports "started" before it leads its partitions again
 * (the controller re-elects it after unfencing). Poll until every partition of every
 * topic (internal ones included) answers ListOffsets, so callers get a serving broker.
 */
async function waitUntilPartitionsServed(brokers: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    // A fresh client per attempt: no metadata cached from before the restart.
    const admin = new Kafka({ clientId: "streamsink-infra", brokers: [brokers], logLevel: logLevel.NOTHING, retry: { retries: 0 } }).admin();
    try {
      await admin.connect();
      for (const topic of await admin.listTopics()) {
        const offsets = await admin.fetchTopicOffsets(topic);
        if (offsets.length === 0) throw new Error(`topic ${topic} has no partitions yet`);
      }
      return;
    } catch (err) {
      lastError = err;
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
    if (Date.now() >= deadline) {
      throw new Error(`Kafka restart(): partitions not served after ${timeoutMs}ms: ${(lastError as Error)?.message ?? lastError}`);
    }
    await delay(100);
  }
}

/** A fresh single-node Kafka 3.9 (KRaft) on free loopback ports, in a new temp data dir. */
export async function startKafka(): Promise<KafkaHandle> {
  await ensureKafka();
  const dataDir = mkdtempSync(join(tmpdir(), "streamsink-kafka-"));
  track(dataDir, join(dataDir, "kafka.pid"));
  let brokers: string;
  try {
    brokers = lastLine((await runScript(KAFKA_SH, ["start", "--port", "0", "--controller-port", "0", "--data-dir", dataDir], 180_000)).stdout);
  } catch (err) {
    live.delete(dataDir);
    rmSync(dataDir, { recursive: true, force: true });
    throw new Error(`startKafka: ${(err as Error).message}`);
  }
  if (!/^127\.0\.0\.1:\d+$/.test(brokers)) throw new Error(`startKafka: unexpected bootstrap address '${brokers}'`);
  const env = readEnvFile(join(dataDir, "kafka.env"));
  const ports = ["--port", env.KAFKA_PORT!, "--controller-port", env.KAFKA_CONTROLLER_PORT!];
  let stopped = false;

  const handle: KafkaHandle = {
    get brokers() {
      return brokers;
    },
    dataDir,
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await runScript(KAFKA_SH, ["stop", "--data-dir", dataDir], 60_000);
      } finally {
        live.delete(dataDir);
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
    async restart(opts = {}) {
      if (stopped) throw new Error("Kafka restart(): the broker was stopped");
      await runScript(KAFKA_SH, ["stop", "--data-dir", dataDir, ...(opts.kill ? ["--kill"] : [])], 60_000);
      const again = lastLine((await runScript(KAFKA_SH, ["start", ...ports, "--data-dir", dataDir], 180_000)).stdout);
      if (again !== brokers) throw new Error(`Kafka restart(): came back on ${again}, not ${brokers}`);
      await waitUntilPartitionsServed(brokers, 60_000);
    },
  };
  return handle;
}

// ---------------------------------------------------------------- Redis

/**
 * A fresh redis-server on a free loopback port, in a new temp data dir. With
 * `appendonly`, every write is persisted (AOF, fsync always) and survives
 * even `restart({ kill: true })`.
 */
export async function startRedis(opts: { appendonly?: boolean } = {}): Promise<RedisHandle> {
  const missing = ["redis-server", "redis-cli"].filter((c) => !onPath(c));
  if (missing.length) {
    throw new Error(
      `startRedis: cannot run Redis here, missing: ${missing.join(", ")} (not on PATH); ` +
        "run `bash deploy/local/redis.sh install` as root (apt-get install -y redis-server)",
    );
  }
  const dataDir = mkdtempSync(join(tmpdir(), "streamsink-redis-"));
  track(dataDir, join(dataDir, "redis.pid"));
  let url: string;
  try {
    url = lastLine((await runScript(REDIS_SH, ["start", "--port", "0", "--data-dir", dataDir, ...(opts.appendonly ? ["--appendonly"] : [])], 60_000)).stdout);
  } catch (err) {
    live.delete(dataDir);
    rmSync(dataDir, { recursive: true, force: true });
    throw new Error(`startRedis: ${(err as Error).message}`);
  }
  const m = /^redis:\/\/127\.0\.0\.1:(\d+)$/.exec(url);
  if (!m) throw new Error(`startRedis: unexpected url '${url}'`);
  const port = Number(m[1]);
  let stopped = false;

  return {
    url,
    port,
    dataDir,
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await runScript(REDIS_SH, ["stop", "--nosave", "--data-dir", dataDir], 30_000);
      } finally {
        live.delete(dataDir);
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
    async restart(opts = {}) {
      if (stopped) throw new Error("Redis restart(): the server was stopped");
      await runScript(REDIS_SH, ["stop", "--data-dir", dataDir, ...(opts.kill ? ["--kill"] : [])], 30_000);
      const again = lastLine((await runScript(REDIS_SH, ["start", "--port", String(port), "--data-dir", dataDir], 60_000)).stdout);
      if (again !== url) throw new Error(`Redis restart(): came back on ${again}, not ${url}`);
    },
  };
}
