/**
 * Tenants across a real cluster: two worker processes with Kafka and Redis,
 * bearer tokens, mutual TLS between everyone (clients and forwarding
 * workers), forwarded calls signed with the peer secret. Tenant isolation
 * holds for sessions whose owner is the other worker (the call is forwarded)
 * and for sessions fed by Kafka records that carry a tenant in their key. An
 * oversized record goes to the dead-letter topic with its reason.
 */
import { randomUUID } from "node:crypto";

import { status as Status } from "@grpc/grpc-js";
import { type Consumer, Kafka, logLevel, type Producer } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { clientCredentials } from "../../services/security/tls.js";
import { encodeInputRecord } from "../../services/worker/kafka/record-codec.js";
import { loadGolden, modelDir } from "../helpers/fixtures.js";
import { type KafkaHandle, type RedisHandle, startKafka, startRedis } from "../helpers/infra.js";
import { buildDist, clusterWorkerEnv, startWorker, type WorkerProcess } from "../helpers/worker-process.js";
import { securityDir, TOKENS } from "./security-helpers.js";
import { issue, makeCa } from "./test-ca.js";

const ids = loadGolden("llama-gqa").cases[0]!.ids;
const SESSIONS = 12;

describe("tenants in a cluster: forwarding and Kafka records", () => {
  let kafka: KafkaHandle;
  let redis: RedisHandle;
  const workers: WorkerProcess[] = [];
  let producer: Producer;
  let dlq: Consumer;
  const dead: Array<{ key: string; reason: string }> = [];
  const topic = `sec${randomUUID().slice(0, 8)}`;
  const sec = securityDir();
  const ca = makeCa();
  const server = issue(ca, "worker");
  const client = issue(ca, "client");
  const tls = () => clientCredentials({ caFile: ca.caCert, certFile: client.cert, keyFile: client.key });
  const clients: StreamsinkClient[] = [];
  const connect = async (w: WorkerProcess, token: string) => {
    const c = await StreamsinkClient.connect(w.address, { credentials: tls(), bearerToken: token });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    buildDist();
    [kafka, redis] = await Promise.all([startKafka(), startRedis()]);
    const env = {
      ...clusterWorkerEnv(modelDir("llama-gqa"), kafka.brokers, redis.url, topic),
      STREAMSINK_MAX_MESSAGE_BYTES: "4096",
      STREAMSINK_TENANTS_FILE: sec.tenantsFile,
      STREAMSINK_PEER_SECRET_FILE: sec.peerSecretFile,
      STREAMSINK_GRPC_TLS_CERT: server.cert,
      STREAMSINK_GRPC_TLS_KEY: server.key,
      STREAMSINK_GRPC_TLS_CLIENT_CA: ca.caCert,
    };
    const readiness = { credentials: tls() };
    workers.push(await startWorker(env, [], readiness));
    workers.push(await startWorker(env, [], readiness));
    const k = new Kafka({ clientId: "security-test", brokers: [kafka.brokers], logLevel: logLevel.NOTHING });
    producer = k.producer();
    await producer.connect();
    dlq = k.consumer({ groupId: `${topic}-observer` });
    await dlq.connect();
    await dlq.subscribe({ topics: [`${topic}.dlq`], fromBeginning: true });
    await dlq.run({
      eachMessage: async ({ message }) => {
        dead.push({ key: message.key?.toString() ?? "", reason: message.headers?.["streamsink-dlq-reason"]?.toString() ?? "" });
      },
    });
  }, 240_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    await dlq?.disconnect();
    await producer?.disconnect();
    await Promise.all(workers.map((w) => w.kill()));
    await Promise.all([kafka?.stop(), redis?.stop()]);
  });

  /** Retries while partitions move (UNAVAILABLE); any other failure is thrown. */
  async function retrying<T>(what: string, call: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call();
      } catch (err) {
        if ((err as { code?: number }).code !== Status.UNAVAILABLE || attempt > 300)
          throw new Error(`${what}: ${(err as Error).message}\n${workers.map((w) => w.logs.slice(-30).join("")).join("\n---\n")}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async function code(promise: Promise<unknown>): Promise<number> {
    try {
      await promise;
      return Status.OK;
    } catch (err) {
      return (err as { code: number }).code;
    }
  }

  it("keeps tenants apart for sessions owned by the other worker (forwarded calls)", async () => {
    const [a, b] = workers as [WorkerProcess, WorkerProcess];
    const acmeA = await connect(a, TOKENS.acme);
    const acmeB = await connect(b, TOKENS.acme);
    const betaA = await connect(a, TOKENS.beta);
    const betaB = await connect(b, TOKENS.beta);
    let forwarded = 0;
    for (let k = 0; k < SESSIONS; k++) {
      const id = `conv-${k}`;
      await retrying(`acme append ${id}`, () => acmeA.append({ sessionId: id, input: { tokens: ids.slice(0, 10 + k) } }));
      const viaB = await retrying(`acme get ${id}`, () => acmeB.getSession(id));
      expect(viaB.tokensSeen).toBe(10 + k);
      expect(viaB.sessionId).toBe(id);
      if (viaB.owner !== viaB.servedBy) forwarded++;
      // beta, through either worker, finds nothing under the same id.
      for (const beta of [betaA, betaB]) {
        const c = await retrying(`beta get ${id}`, () => code(beta.getSession(id)).then((x) => (x === Status.UNAVAILABLE ? Promise.reject({ code: x }) : x)));
        expect(c).toBe(Status.NOT_FOUND);
      }
      // beta's writes under the same id land in beta's own session.
      await retrying(`beta append ${id}`, () => betaB.append({ sessionId: id, input: { tokens: ids.slice(0, 2) } }));
      expect((await retrying(`beta get ${id}`, () => betaA.getSession(id))).tokensSeen).toBe(2);
      expect((await retrying(`beta close ${id}`, () => betaA.closeSession(id))).existed).toBe(true);
      expect((await retrying(`acme get ${id}`, () => acmeA.getSession(id))).tokensSeen).toBe(10 + k);
    }
    // Some of the sessions live on the worker the call did not reach.
    expect(forwarded).toBeGreaterThan(0);
    expect(forwarded).toBeLessThan(SESSIONS);
  });

  it("applies a Kafka record to the tenant its key names, invisible to other tenants", async () => {
    const [a, b] = workers as [WorkerProcess, WorkerProcess];
    const op = { kind: "append" as const, session: "acme/from-kafka", requestId: "k-1", input: { tokens: ids.slice(0, 15) } };
    await producer.send({ topic: `${topic}.input`, messages: [{ key: op.session, value: encodeInputRecord(op) }] });
    const acme = await connect(a, TOKENS.acme);
    let seen = 0;
    for (let i = 0; i < 600 && seen !== 15; i++) {
      seen = await acme.getSession("from-kafka").then(
        (info) => info.tokensSeen,
        () => 0,
      );
      if (seen !== 15) await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen).toBe(15);
    const beta = await connect(b, TOKENS.beta);
    for (const guess of ["from-kafka", "acme/from-kafka"])
      expect(await retrying(`beta get ${guess}`, () => code(beta.getSession(guess)).then((x) => (x === Status.UNAVAILABLE ? Promise.reject({ code: x }) : x)))).toBe(
        Status.NOT_FOUND,
      );
  });

  it("dead-letters a record whose tenant field does not match its key", async () => {
    const value = JSON.parse(encodeInputRecord({ kind: "append", session: "x", requestId: "k-tenant", input: { tokens: [1, 2] } }).toString()) as object;
    await producer.send({ topic: `${topic}.input`, messages: [{ key: "beta/mislabelled", value: JSON.stringify({ ...value, tenant: "acme" }) }] });
    for (let i = 0; i < 600 && !dead.some((d) => d.key === "beta/mislabelled"); i++) await new Promise((r) => setTimeout(r, 100));
    expect(dead.find((d) => d.key === "beta/mislabelled")?.reason).toMatch(/"tenant" \(acme\) does not match the record key/);
  });

  it("dead-letters a record larger than the record size limit, with the reason", async () => {
    const op = { kind: "append" as const, session: "acme/huge", requestId: "k-huge", input: { text: "x".repeat(8000) } };
    await producer.send({ topic: `${topic}.input`, messages: [{ key: op.session, value: encodeInputRecord(op) }] });
    for (let i = 0; i < 600 && !dead.some((d) => d.key === "acme/huge"); i++) await new Promise((r) => setTimeout(r, 100));
    const letter = dead.find((d) => d.key === "acme/huge");
    expect(letter?.reason).toMatch(/exceeds the limit of 4096/);
  });
});
