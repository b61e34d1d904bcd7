/**
 * gRPC over TLS and mutual TLS on a real embedded worker, with a CA made in
 * the test by openssl: clients that do not trust the CA, plaintext clients
 * and (with mTLS) clients without a certificate from the client CA are
 * refused; a certificate rotated on disk is served to new connections
 * without a restart. Which certificate the server presents is read from a
 * raw TLS handshake (its serial number).
 */
import { copyFileSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { connect as tlsConnect } from "node:tls";

import { credentials } from "@grpc/grpc-js";
import { afterAll, describe, expect, it } from "vitest";

import { runFeed, runGenerate } from "../../services/cli/client-commands.js";
import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { clientCredentials } from "../../services/security/tls.js";
import { plaintextWarnings } from "../../services/security/worker-security.js";
import { loadWorkerConfig } from "../../services/worker/config.js";
import { createLogger } from "../../services/worker/logger.js";
import { Worker } from "../../services/worker/worker.js";
import { modelDir } from "../helpers/fixtures.js";
import { securityDir, TOKENS } from "./security-helpers.js";
import { issue, makeCa } from "./test-ca.js";

const quiet = createLogger("error");

function baseArgs(dir: string): string[] {
  return ["--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--snapshot-dir", join(dir, "snapshots"), "--sinks", "4", "--window", "28"];
}

/** The serial number (hex, no leading zeros) of the certificate the server presents. */
function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, ca: readFileSync(ca), ALPNProtocols: ["h2"], servername: "localhost" }, () => {
      const serial = socket.getPeerCertificate().serialNumber.replace(/^0+/, "").toUpperCase();
      socket.destroy();
      resolve(serial);
    });
    socket.once("error", reject);
  });
}

/** Resolves to true once `call` succeeds, false when it fails with a gRPC error. */
async function reachable(address: string, creds: ReturnType<typeof credentials.createInsecure>): Promise<boolean> {
  try {
    const client = await StreamsinkClient.connect(address, { credentials: creds, readyTimeoutMs: 1500 });
    try {
      await client.append({ sessionId: "tls", input: { tokens: [1, 2, 3] } });
      return true;
    } finally {
      client.close();
    }
  } catch {
    return false;
  }
}

describe("gRPC TLS", () => {
  const ca = makeCa();
  const other = makeCa("another CA");
  const workers: Worker[] = [];
  afterAll(async () => {
    for (const w of workers) await w.stop();
  });

  it("serves TLS: trusted clients connect, plaintext and untrusting clients do not; a rotated certificate is picked up without a restart", async () => {
    const first = issue(ca, "server-a");
    const second = issue(ca, "server-b");
    const certFile = join(ca.dir, "live.crt");
    const keyFile = join(ca.dir, "live.key");
    copyFileSync(first.cert, certFile);
    copyFileSync(first.key, keyFile);
    const worker = await Worker.start(
      loadWorkerConfig([...baseArgs(ca.dir), "--grpc-tls-cert", certFile, "--grpc-tls-key", keyFile, "--grpc-tls-refresh-ms", "200"], {}),
      { log: quiet },
    );
    workers.push(worker);
    const address = worker.advertiseAddress;
    expect(await reachable(address, clientCredentials({ caFile: ca.caCert }))).toBe(true);
    expect(await reachable(address, credentials.createInsecure())).toBe(false);
    expect(await reachable(address, clientCredentials({ caFile: other.caCert }))).toBe(false);
    expect(await servedSerial(worker.grpcPort, ca.caCert)).toBe(first.serial);

    // Rotate: key first, then the certificate, each replaced atomically.
    copyFileSync(second.key, `${keyFile}.new`);
    renameSync(`${keyFile}.new`, keyFile);
    copyFileSync(second.cert, `${certFile}.new`);
    renameSync(`${certFile}.new`, certFile);
    let serial = "";
    for (let i = 0; i < 300 && serial !== second.serial; i++) {
      serial = await servedSerial(worker.grpcPort, ca.caCert).catch(() => "");
      if (serial !== second.serial) await new Promise((r) => setTimeout(r, 100));
    }
    expect(serial).toBe(second.serial);
    expect(await reachable(address, clientCredentials({ caFile: ca.caCert }))).toBe(true);
  });

  it("requires a client certificate from the client CA with mutual TLS", async () => {
    const server = issue(ca, "server-m");
    const client = issue(ca, "client-m");
    const stranger = issue(other, "client-x");
    const worker = await Worker.start(
      loadWorkerConfig([...baseArgs(ca.dir), "--grpc-tls-cert", server.cert, "--grpc-tls-key", server.key, "--grpc-tls-client-ca", ca.caCert], {}),
      { log: quiet },
    );
    workers.push(worker);
    const address = worker.advertiseAddress;
    expect(await reachable(address, clientCredentials({ caFile: ca.caCert, certFile: client.cert, keyFile: client.key }))).toBe(true);
    expect(await reachable(address, clientCredentials({ caFile: ca.caCert }))).toBe(false);
    expect(await reachable(address, clientCredentials({ caFile: ca.caCert, certFile: stranger.cert, keyFile: stranger.key }))).toBe(false);
  });

  it("lets the CLI client commands in with TLS, a client certificate and a token file", async () => {
    const server = issue(ca, "server-cli");
    const client = issue(ca, "client-cli");
    const sec = securityDir();
    const worker = await Worker.start(
      loadWorkerConfig(
        [...baseArgs(ca.dir), "--grpc-tls-cert", server.cert, "--grpc-tls-key", server.key, "--grpc-tls-client-ca", ca.caCert, "--tenants-file", sec.tenantsFile],
        {},
      ),
      { log: quiet },
    );
    workers.push(worker);
    const tokenFile = join(sec.dir, "token");
    writeFileSync(tokenFile, `${TOKENS.acme}\n`);
    const textFile = join(sec.dir, "text.txt");
    writeFileSync(textFile, "A stream that does not end keeps its sinks. ".repeat(4));
    const tls = ["--tls-ca", ca.caCert, "--tls-cert", client.cert, "--tls-key", client.key];
    const io = () => {
      const out: string[] = [];
      const stdout = new PassThrough();
      stdout.on("data", (d: Buffer) => out.push(d.toString()));
      return { io: { stdin: Readable.from([""]), stdout, stderr: new PassThrough() as unknown as NodeJS.WriteStream }, out };
    };
    await runFeed(["--server", worker.advertiseAddress, "--session", "cli", "--text", textFile, ...tls, "--token-file", tokenFile], io().io);
    const gen = io();
    await runGenerate(["--server", worker.advertiseAddress, "--session", "cli", "--max-new-tokens", "3", ...tls, "--token-file", tokenFile], gen.io);
    const reader = await StreamsinkClient.connect(worker.advertiseAddress, {
      credentials: clientCredentials({ caFile: ca.caCert, certFile: client.cert, keyFile: client.key }),
      bearerToken: TOKENS.acme,
    });
    expect((await reader.getSession("cli")).tokensSeen).toBeGreaterThan(3);
    reader.close();
    // Without the token the same command is refused.
    await expect(runGenerate(["--server", worker.advertiseAddress, "--session", "cli", ...tls], io().io)).rejects.toMatchObject({ code: 16 });
  });

  it("warns about a cluster configured without TLS, and not about the embedded default", () => {
    const embedded = loadWorkerConfig(baseArgs(ca.dir), {});
    expect(plaintextWarnings(embedded)).toEqual([]);
    const cluster = loadWorkerConfig([...baseArgs(ca.dir), "--kafka-brokers", "127.0.0.1:9092", "--redis-url", "redis://10.0.0.5:6379"], {});
    const warnings = plaintextWarnings(cluster).join("\n");
    expect(warnings).toMatch(/without gRPC TLS/);
    expect(warnings).toMatch(/Kafka without TLS/);
    expect(warnings).toMatch(/Redis without TLS/);
    expect(warnings).toMatch(/without authentication/);
    const server = issue(ca, "server-w");
    const secured = loadWorkerConfig(
      [...baseArgs(ca.dir), "--kafka-brokers", "127.0.0.1:9092", "--kafka-ssl", "true", "--redis-url", "rediss://10.0.0.5:6379", "--grpc-tls-cert", server.cert, "--grpc-tls-key", server.key],
      {},
    );
    expect(plaintextWarnings(secured).join("\n")).not.toMatch(/TLS/);
  });
});
