/**
 * Kafka over SASL_SSL and over mutual TLS against a real broker
 * (deploy/local/kafka.sh with extra listeners: SASL_SSL, and SSL requiring
 * client certificates; the certificates from an openssl-made CA, PLAIN users
 * in the JAAS config, a SCRAM-SHA-512 user created with the broker's own
 * ConfigCommand). A worker logs and serves its calls through each; a wrong
 * password, a missing client certificate or a client that does not trust the
 * CA is refused. The metrics sidecar reads consumer-group lag and `streamsink
 * feed` produces records through the same listeners with the same flags.
 */
import { execFile, execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";

import { Kafka, logLevel, type SASLOptions } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { runLoad } from "../../services/cli/load.js";
import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { loadWorkerConfig } from "../../services/worker/config.js";
import { createLogger } from "../../services/worker/logger.js";
import { decodeInputRecord } from "../../services/worker/kafka/record-codec.js";
import { Worker } from "../../services/worker/worker.js";
import { loadGolden, modelDir, ROOT } from "../helpers/fixtures.js";
import { buildDist, freePort } from "../helpers/worker-process.js";
import { samplesOf, valueOf } from "../ops/prom-text.js";
import { scrapeUntil, type SidecarProcess, startSidecar } from "../ops/sidecar-process.js";
import { issue, makeCa } from "./test-ca.js";

const ids = loadGolden("llama-gqa").cases[0]!.ids;
const KAFKA_SH = join(ROOT, "deploy", "local", "kafka.sh");
const LIBS = process.env.KAFKA_LIBS ?? join(process.env.STREAMSINK_INFRA_DIR ?? join(homedir(), ".cache", "streamsink"), "kafka-3.9", "libs");
const PLAIN_USER = { username: "alice", password: "alice-secret-0123456789" };
const SCRAM_USER = { username: "bob", password: "bob-secret-0123456789" };

describe("Kafka over SASL_SSL and mutual TLS", () => {
  const ca = makeCa();
  const other = makeCa("untrusted CA");
  const broker = issue(ca, "broker");
  const workerCert = issue(ca, "kafka-client");
  const stranger = issue(other, "kafka-stranger");
  let mtlsPort: number;
  const data = mkdtempSync(join(tmpdir(), "streamsink-kafka-sasl-"));
  let saslPort: number;
  let plainPort: number;

  beforeAll(async () => {
    const r = spawnSync("bash", [KAFKA_SH, "fetch"], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`kafka.sh fetch failed: ${r.stderr}`);
    const keystore = join(ca.dir, "broker-keystore.pem");
    writeFileSync(keystore, readFileSync(broker.key, "utf8") + readFileSync(broker.cert, "utf8"));
    const ports = new Set<number>();
    while (ports.size < 4) ports.add(await freePort());
    let controller: number;
    [plainPort, saslPort, mtlsPort, controller] = [...ports] as [number, number, number, number];
    const jaas = `org.apache.kafka.common.security.plain.PlainLoginModule required user_${PLAIN_USER.username}="${PLAIN_USER.password}";`;
    const config = [
      `listeners=PLAINTEXT://127.0.0.1:${plainPort},CONTROLLER://127.0.0.1:${controller},SASL_SSL://127.0.0.1:${saslPort},SSL://127.0.0.1:${mtlsPort}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${plainPort},SASL_SSL://127.0.0.1:${saslPort},SSL://127.0.0.1:${mtlsPort}`,
      "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
      "listener.name.ssl.ssl.client.auth=required",
      "ssl.truststore.type=PEM",
      `ssl.truststore.location=${ca.caCert}`,
      "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512",
      `listener.name.sasl_ssl.plain.sasl.jaas.config=${jaas}`,
      "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
      "ssl.keystore.type=PEM",
      `ssl.keystore.location=${keystore}`,
    ];
    const start = spawnSync(
      "bash",
      [KAFKA_SH, "start", "--port", String(plainPort), "--controller-port", String(controller), "--data-dir", data, ...config.flatMap((c) => ["--config", c])],
      { encoding: "utf8", timeout: 180_000 },
    );
    if (start.status !== 0) throw new Error(`kafka.sh start failed:\n${start.stderr}`);
    // SCRAM credentials live in the cluster metadata: created through the plaintext listener (loopback, for the operator).
    const classpath = readdirSync(LIBS).filter((f) => f.endsWith(".jar")).sort().map((f) => join(LIBS, f)).join(":");
    execFileSync(
      "java",
      ["-cp", classpath, "kafka.admin.ConfigCommand", "--bootstrap-server", `127.0.0.1:${plainPort}`, "--alter", "--add-config",
        `SCRAM-SHA-512=[password=${SCRAM_USER.password}]`, "--entity-type", "users", "--entity-name", SCRAM_USER.username],
      { stdio: "pipe", timeout: 120_000 },
    );
    // The sidecar and the CLI run as processes from dist/.
    buildDist();
  }, 240_000);

  afterAll(() => {
    spawnSync("bash", [KAFKA_SH, "stop", "--data-dir", data], { timeout: 60_000 });
    rmSync(data, { recursive: true, force: true });
  });

  async function canList(options: {
    ca: string;
    sasl?: { mechanism: "plain" | "scram-sha-512"; username: string; password: string };
    cert?: { cert: string; key: string };
  }): Promise<boolean> {
    const kafka = new Kafka({
      clientId: "sasl-probe",
      brokers: [`127.0.0.1:${options.sasl ? saslPort : mtlsPort}`],
      ssl: { ca: [readFileSync(options.ca)], ...(options.cert ? { cert: readFileSync(options.cert.cert), key: readFileSync(options.cert.key) } : {}) },
      ...(options.sasl ? { sasl: options.sasl as SASLOptions } : {}),
      logLevel: logLevel.NOTHING,
      retry: { retries: 0 },
      connectionTimeout: 5000,
      authenticationTimeout: 5000,
    });
    const admin = kafka.admin();
    try {
      await admin.connect();
      await admin.listTopics();
      return true;
    } catch {
      return false;
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }

  it("refuses a wrong password and a client that does not trust the broker's CA", async () => {
    expect(await canList({ ca: ca.caCert, sasl: { mechanism: "scram-sha-512", ...SCRAM_USER } })).toBe(true);
    expect(await canList({ ca: ca.caCert, sasl: { mechanism: "plain", ...PLAIN_USER } })).toBe(true);
    expect(await canList({ ca: ca.caCert, sasl: { mechanism: "scram-sha-512", username: SCRAM_USER.username, password: "wrong-password-0000" } })).toBe(false);
    expect(await canList({ ca: ca.caCert, sasl: { mechanism: "plain", username: PLAIN_USER.username, password: "wrong-password-0000" } })).toBe(false);
    expect(await canList({ ca: other.caCert, sasl: { mechanism: "scram-sha-512", ...SCRAM_USER } })).toBe(false);
  });

  it("requires a client certificate from the CA on the mutual-TLS listener", async () => {
    expect(await canList({ ca: ca.caCert, cert: { cert: workerCert.cert, key: workerCert.key } })).toBe(true);
    expect(await canList({ ca: ca.caCert })).toBe(false);
    expect(await canList({ ca: ca.caCert, cert: { cert: stranger.cert, key: stranger.key } })).toBe(false);
  });

  it("runs a worker's log through the mutual-TLS listener with its client certificate", async () => {
    const topic = `mtls-${Date.now()}`;
    const args = [
      "--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
      "--snapshot-dir", mkdtempSync(join(tmpdir(), "mtls-worker-")), "--sinks", "4", "--window", "28",
      "--kafka-brokers", `127.0.0.1:${mtlsPort}`, "--kafka-ssl", "true", "--kafka-tls-ca", ca.caCert,
      "--kafka-tls-cert", workerCert.cert, "--kafka-tls-key", workerCert.key,
      "--kafka-input-topic", `${topic}.in`, "--kafka-output-topic", `${topic}.out`, "--kafka-dead-letter-topic", `${topic}.dlq`,
      "--kafka-group", `${topic}-g`, "--kafka-partitions", "2",
    ];
    const worker = await Worker.start(loadWorkerConfig(args, {}), { log: createLogger("error") });
    try {
      const client = await StreamsinkClient.connect(worker.advertiseAddress);
      let tokensSeen = 0;
      for (let attempt = 0; attempt < 300 && tokensSeen === 0; attempt++) {
        try {
          tokensSeen = (await client.append({ sessionId: "over-mtls", input: { tokens: ids.slice(0, 9) } })).tokensSeen;
        } catch (err) {
          if ((err as { code?: number }).code !== 14) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      expect(tokensSeen).toBe(9);
      client.close();
    } finally {
      await worker.stop();
    }
  });

  for (const [mechanism, user] of [
    ["scram-sha-512", SCRAM_USER],
    ["plain", PLAIN_USER],
  ] as const) {
    it(`runs a worker's log through the SASL_SSL listener (${mechanism})`, async () => {
      const topic = `sasl-${mechanism}-${Date.now()}`;
      const args = [
        "--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
        "--snapshot-dir", mkdtempSync(join(tmpdir(), "sasl-worker-")), "--sinks", "4", "--window", "28",
        "--kafka-brokers", `127.0.0.1:${saslPort}`, "--kafka-ssl", "true", "--kafka-tls-ca", ca.caCert,
        "--kafka-sasl-mechanism", mechanism, "--kafka-sasl-username", user.username,
        "--kafka-input-topic", `${topic}.in`, "--kafka-output-topic", `${topic}.out`, "--kafka-dead-letter-topic", `${topic}.dlq`,
        "--kafka-group", `${topic}-g`, "--kafka-partitions", "2",
      ];
      const lines: string[] = [];
      const worker = await Worker.start(loadWorkerConfig(args, { STREAMSINK_KAFKA_SASL_PASSWORD: user.password }), {
        log: createLogger("info", {}, (l) => lines.push(l)),
      });
      try {
        const client = await StreamsinkClient.connect(worker.advertiseAddress);
        let tokensSeen = 0;
        for (let attempt = 0; attempt < 300; attempt++) {
          try {
            tokensSeen = (await client.append({ sessionId: "over-sasl", input: { tokens: ids.slice(0, 12) } })).tokensSeen;
            break;
          } catch (err) {
            if ((err as { code?: number }).code !== 14) throw err;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
        expect(tokensSeen).toBe(12);
        client.close();
      } finally {
        await worker.stop();
      }
      expect(lines.join("")).not.toContain(user.password);
    });
  }

  /** Admin on the plaintext listener (the operator's side): topics and offsets the clients under test read or write. */
  function operator() {
    return new Kafka({ clientId: "sasl-operator", brokers: [`127.0.0.1:${plainPort}`], logLevel: logLevel.NOTHING });
  }

  describe("metrics sidecar", () => {
    const sidecars: SidecarProcess[] = [];
    afterAll(async () => {
      for (const s of sidecars) await s.stop();
    });

    /** A topic with 5 + 3 records and the group committed at 2 on partition 0: lag 3 and 3. */
    async function laggingGroup(): Promise<{ topic: string; group: string }> {
      const topic = `sidecar-tls-${Date.now()}`;
      const group = `${topic}-g`;
      const admin = operator().admin();
      const producer = operator().producer();
      await admin.connect();
      await producer.connect();
      try {
        await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
        const records = (partition: number, n: number) => Array.from({ length: n }, (_, i) => ({ partition, value: `r${i}` }));
        await producer.send({ topic, messages: [...records(0, 5), ...records(1, 3)] });
        await admin.setOffsets({ groupId: group, topic, partitions: [{ partition: 0, offset: "2" }] });
      } finally {
        await producer.disconnect();
        await admin.disconnect();
      }
      return { topic, group };
    }

    async function sidecar(port: number, topic: string, group: string, kafkaArgs: string[], env: Record<string, string> = {}): Promise<SidecarProcess> {
      const s = await startSidecar(
        ["--worker-metrics", "http://127.0.0.1:1/metrics", "--nvidia-smi", "off", "--kafka-interval-ms", "300",
          "--kafka-brokers", `127.0.0.1:${port}`, "--kafka-group", group, "--kafka-topic", topic, ...kafkaArgs],
        env,
      );
      sidecars.push(s);
      return s;
    }

    const lagOf = (e: Parameters<typeof valueOf>[0], group: string, topic: string) =>
      [0, 1].map((p) => valueOf(e, "streamsink_kafka_consumer_group_lag_records", { group, topic, partition: String(p) }));

    it("reads consumer-group lag through the mutual-TLS listener with the CA file and its client certificate", async () => {
      const { topic, group } = await laggingGroup();
      const side = await sidecar(mtlsPort, topic, group, ["--kafka-ssl", "true", "--kafka-tls-ca", ca.caCert, "--kafka-tls-cert", workerCert.cert, "--kafka-tls-key", workerCert.key]);
      const e = await scrapeUntil(side, (x) => valueOf(x, "streamsink_sidecar_kafka_up") === 1, "a lag read over mutual TLS");
      expect(lagOf(e, group, topic)).toEqual([3, 3]);
      expect(valueOf(e, "streamsink_kafka_consumer_group_committed_offset", { group, topic, partition: "0" })).toBe(2);
    });

    it("reads consumer-group lag through the SASL_SSL listener (SCRAM, password from the environment)", async () => {
      const { topic, group } = await laggingGroup();
      const side = await sidecar(
        saslPort, topic, group,
        ["--kafka-ssl", "true", "--kafka-tls-ca", ca.caCert, "--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-username", SCRAM_USER.username],
        { STREAMSINK_KAFKA_SASL_PASSWORD: SCRAM_USER.password },
      );
      const e = await scrapeUntil(side, (x) => valueOf(x, "streamsink_sidecar_kafka_up") === 1, "a lag read over SASL_SSL");
      expect(lagOf(e, group, topic)).toEqual([3, 3]);
      expect(side.logs.join("")).not.toContain(SCRAM_USER.password);
    });

    it("reports kafka_up 0 and keeps serving when it does not trust the brokers' CA", async () => {
      const { topic, group } = await laggingGroup();
      // The client certificate is right; only the CA is missing (the system's roots do not know the test CA).
      const side = await sidecar(mtlsPort, topic, group, ["--kafka-ssl", "true", "--kafka-tls-cert", workerCert.cert, "--kafka-tls-key", workerCert.key]);
      const kafkaHealth = async () => (await side.health()).kafka as { up: boolean; lastError?: string };
      let health = await kafkaHealth();
      for (let checks = 0; checks < 600 && health.lastError === undefined; checks++) {
        await new Promise((r) => setTimeout(r, 100));
        health = await kafkaHealth();
      }
      expect(health).toMatchObject({ group, topic, up: false });
      expect(health.lastError).toMatch(/certificate/i);
      const e = await side.scrape();
      expect(valueOf(e, "streamsink_sidecar_kafka_up")).toBe(0);
      expect(samplesOf(e, "streamsink_kafka_consumer_group_lag_records")).toEqual([]);
      expect(side.proc.exitCode).toBe(null);
    });

    it("refuses a CA file without --kafka-ssl true, and a missing CA file, at start", async () => {
      await expect(sidecar(mtlsPort, "t", "g", ["--kafka-tls-ca", ca.caCert])).rejects.toThrow(/--kafka-tls-ca \/ STREAMSINK_KAFKA_TLS_CA needs --kafka-ssl/);
      await expect(sidecar(mtlsPort, "t", "g", ["--kafka-ssl", "true"], { STREAMSINK_KAFKA_TLS_CA: join(ca.dir, "absent.crt") })).rejects.toThrow(/absent\.crt does not exist/);
    });
  });

  it("drives `streamsink load` Kafka sessions through the SASL_SSL listener (records in, results back)", async () => {
    const topic = `load-sasl-${Date.now()}`;
    const kafkaArgs = ["--kafka-ssl", "true", "--kafka-tls-ca", ca.caCert, "--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-username", SCRAM_USER.username];
    const worker = await Worker.start(
      loadWorkerConfig(
        ["--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
          "--snapshot-dir", mkdtempSync(join(tmpdir(), "load-sasl-worker-")), "--sinks", "4", "--window", "28",
          "--kafka-brokers", `127.0.0.1:${saslPort}`, ...kafkaArgs,
          "--kafka-input-topic", `${topic}.in`, "--kafka-output-topic", `${topic}.out`, "--kafka-dead-letter-topic", `${topic}.dlq`,
          "--kafka-group", `${topic}-g`, "--kafka-partitions", "1"],
        { STREAMSINK_KAFKA_SASL_PASSWORD: SCRAM_USER.password },
      ),
      { log: createLogger("error") },
    );
    // The CLI reads the password from its environment only.
    process.env.STREAMSINK_KAFKA_SASL_PASSWORD = SCRAM_USER.password;
    try {
      const report = (await runLoad(
        ["--server", worker.advertiseAddress, "--sessions", "1", "--kafka-sessions", "1", "--minutes", "0.05", "--generate", "2", "--append-words", "6",
          "--kafka-brokers", `127.0.0.1:${saslPort}`, "--kafka-input-topic", `${topic}.in`, "--kafka-output-topic", `${topic}.out`, ...kafkaArgs],
        () => undefined,
      )) as { kafka: { requests: number; errors: Record<string, number>; tokens_appended: number; tokens_generated: number } };
      expect(report.kafka.errors).toEqual({});
      expect(report.kafka.requests).toBeGreaterThanOrEqual(2);
      expect(report.kafka.tokens_appended).toBeGreaterThan(0);
      expect(report.kafka.tokens_generated).toBeGreaterThan(0);
    } finally {
      delete process.env.STREAMSINK_KAFKA_SASL_PASSWORD;
      await worker.stop();
    }
  });

  describe("streamsink feed --kafka-brokers", () => {
    const text = Array.from({ length: 40 }, (_, i) => `line ${i} of the text fed through TLS`).join("\n") + "\n";
    const textFile = join(ca.dir, "feed.txt");
    writeFileSync(textFile, text);

    function feed(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stderr: string }> {
      return new Promise((resolve) => {
        execFile(
          process.execPath,
          [join(ROOT, "dist", "services", "cli", "main.js"), "feed", "--text", textFile, "--chunk-bytes", "256", ...args],
          { cwd: ROOT, env: { ...process.env, STREAMSINK_KAFKA_SASL_PASSWORD: "", ...env }, timeout: 120_000 },
          (err, _stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
        );
      });
    }

    async function newTopic(): Promise<string> {
      const topic = `feed-tls-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
      const admin = operator().admin();
      await admin.connect();
      try {
        await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
      } finally {
        await admin.disconnect();
      }
      return topic;
    }

    /** The append ops on the topic, read back through the plaintext listener. */
    async function appendsOn(topic: string, expected: number) {
      const consumer = operator().consumer({ groupId: `${topic}-reader` });
      const ops: ReturnType<typeof decodeInputRecord>[] = [];
      await consumer.connect();
      try {
        await consumer.subscribe({ topic, fromBeginning: true });
        await new Promise<void>((resolve) => {
          void consumer.run({
            eachMessage: async ({ message }) => {
              ops.push(decodeInputRecord(message.key, message.value, 1 << 20));
              if (ops.length === expected) resolve();
            },
          });
        });
      } finally {
        await consumer.disconnect();
      }
      return ops;
    }

    const appendsCount = (stderr: string) => Number(/fed \d+ bytes in (\d+) appends/.exec(stderr)?.[1]);

    for (const [listener, port, securityArgs, env] of [
      ["SASL_SSL (scram-sha-512)", () => saslPort, ["--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-username", SCRAM_USER.username], { STREAMSINK_KAFKA_SASL_PASSWORD: SCRAM_USER.password }],
      ["SASL_SSL (plain)", () => saslPort, ["--kafka-sasl-mechanism", "plain", "--kafka-sasl-username", PLAIN_USER.username], { STREAMSINK_KAFKA_SASL_PASSWORD: PLAIN_USER.password }],
      ["mutual TLS", () => mtlsPort, ["--kafka-tls-cert", workerCert.cert, "--kafka-tls-key", workerCert.key], {}],
    ] as const) {
      it(`delivers the text as append records through the ${listener} listener`, async () => {
        const topic = await newTopic();
        const r = await feed(
          ["--kafka-brokers", `127.0.0.1:${port()}`, "--kafka-topic", topic, "--session", "fed-over-tls", "--kafka-ssl", "true", "--kafka-tls-ca", ca.caCert, ...securityArgs],
          env,
        );
        expect(r.stderr).toContain('to session "fed-over-tls"');
        expect(r.code).toBe(0);
        const chunks = appendsCount(r.stderr);
        expect(chunks).toBeGreaterThan(1);
        const ops = await appendsOn(topic, chunks);
        expect(ops.every((op) => op.kind === "append" && op.session === "fed-over-tls")).toBe(true);
        expect(ops.map((op) => (op.kind === "append" && "text" in op.input ? op.input.text : "")).join("")).toBe(text);
      });
    }

    it("refuses settings that cannot work before connecting (exit 2, the setting named)", async () => {
      const brokers = ["--kafka-brokers", `127.0.0.1:${saslPort}`, "--session", "s"];
      const noSsl = await feed([...brokers, "--kafka-tls-ca", ca.caCert]);
      expect(noSsl.code).toBe(2);
      expect(noSsl.stderr).toMatch(/--kafka-tls-ca \/ STREAMSINK_KAFKA_TLS_CA needs --kafka-ssl \/ STREAMSINK_KAFKA_SSL true/);
      const noPassword = await feed([...brokers, "--kafka-ssl", "true", "--kafka-sasl-mechanism", "plain", "--kafka-sasl-username", "alice"]);
      expect(noPassword.code).toBe(2);
      expect(noPassword.stderr).toMatch(/needs --kafka-sasl-username \/ STREAMSINK_KAFKA_SASL_USERNAME and STREAMSINK_KAFKA_SASL_PASSWORD/);
      const loneCert = await feed([...brokers, "--kafka-ssl", "true", "--kafka-tls-cert", workerCert.cert]);
      expect(loneCert.code).toBe(2);
      expect(loneCert.stderr).toMatch(/go together/);
    });
  });
});
