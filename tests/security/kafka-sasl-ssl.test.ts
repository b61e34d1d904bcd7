/**
 * Kafka over SASL_SSL and over mutual TLS against a real broker
 * (deploy/local/kafka.sh with extra listeners: SASL_SSL, and SSL requiring
 * client certificates; the certificates from an openssl-made CA, PLAIN users
 * in the JAAS config, a SCRAM-SHA-512 user created with the broker's own
 * ConfigCommand). A worker logs and serves its calls through each; a wrong
 * password, a missing client certificate or a client that does not trust the
 * CA is refused.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";

import { Kafka, logLevel, type SASLOptions } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { loadWorkerConfig } from "../../services/worker/config.js";
import { createLogger } from "../../services/worker/logger.js";
import { Worker } from "../../services/worker/worker.js";
import { loadGolden, modelDir, ROOT } from "../helpers/fixtures.js";
import { freePort } from "../helpers/worker-process.js";
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
});
