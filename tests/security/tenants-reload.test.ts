/**
 * The tenants file and the JWT key are reloaded without a restart: a revoked token stops
 * working and a new one starts, a changed limit applies, and a file that does
 * not parse leaves the tokens in force (with a warning). Authentication never
 * turns off, even when the reloaded file lists no token at all.
 */
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { status as Status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { loadWorkerConfig } from "../../services/worker/config.js";
import { createLogger } from "../../services/worker/logger.js";
import { Worker } from "../../services/worker/worker.js";
import { modelDir } from "../helpers/fixtures.js";
import { nowSeconds, rsaKeys, securityDir, signJwt, statusOf, TOKENS } from "./security-helpers.js";

const NEW_TOKEN = "gamma-token-0123456789abcdef";

describe("tenants file reload", () => {
  const sec = securityDir();
  const lines: string[] = [];
  let worker: Worker;
  const clients: StreamsinkClient[] = [];
  const connect = async (token: string) => {
    const c = await StreamsinkClient.connect(worker.advertiseAddress, { bearerToken: token });
    clients.push(c);
    return c;
  };
  /** Replaces the file atomically, as a Secret update or a config tool does. */
  const writeTenants = (content: string) => {
    writeFileSync(`${sec.tenantsFile}.new`, content);
    renameSync(`${sec.tenantsFile}.new`, sec.tenantsFile);
  };
  /** Polls a call until it answers `want` (the reload is seen on the next file check). */
  async function until(want: number, call: () => Promise<unknown>): Promise<number> {
    let code = -1;
    for (let i = 0; i < 200 && code !== want; i++) {
      code = await call().then(
        () => Status.OK,
        (err: { code: number }) => err.code,
      );
      if (code !== want) await new Promise((r) => setTimeout(r, 50));
    }
    return code;
  }

  beforeAll(async () => {
    const args = [
      "--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
      "--snapshot-dir", join(sec.dir, "snapshots"), "--sinks", "4", "--window", "28", "--tenants-file", sec.tenantsFile, "--tenants-refresh-ms", "100",
    ];
    worker = await Worker.start(loadWorkerConfig(args, {}), { log: createLogger("info", {}, (l) => lines.push(l)) });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await worker?.stop();
  });

  it("revokes and adds tokens and applies new limits without a restart", async () => {
    const acme = await connect(TOKENS.acme);
    const gamma = await connect(NEW_TOKEN);
    await acme.append({ sessionId: "r", input: { tokens: [1, 2, 3] } });
    expect(await statusOf(gamma.getSession("r"))).toBe(Status.UNAUTHENTICATED);
    writeTenants(JSON.stringify({ tokens: [{ tenant: "gamma", token: NEW_TOKEN }], tenants: { gamma: { maxNewTokens: 2 } } }));
    expect(await until(Status.UNAUTHENTICATED, () => acme.getSession("r"))).toBe(Status.UNAUTHENTICATED);
    await gamma.append({ sessionId: "r", input: { tokens: [4, 5] } });
    expect((await gamma.getSession("r")).tokensSeen).toBe(2);
    expect(await statusOf((async () => {
      for await (const e of gamma.generate({ sessionId: "r", maxNewTokens: 3 })) void e;
    })())).toBe(Status.RESOURCE_EXHAUSTED);
  });

  it("keeps the tokens in force when the new file does not parse, and stays closed with no tokens", async () => {
    const gamma = await connect(NEW_TOKEN);
    writeTenants("{ not json");
    for (let i = 0; i < 200 && !lines.some((l) => l.includes("settings file not reloaded")); i++) await new Promise((r) => setTimeout(r, 50));
    expect(lines.some((l) => l.includes("settings file not reloaded"))).toBe(true);
    expect((await gamma.getSession("r")).tokensSeen).toBe(2);
    writeTenants(JSON.stringify({ tokens: [] }));
    expect(await until(Status.UNAUTHENTICATED, () => gamma.getSession("r"))).toBe(Status.UNAUTHENTICATED);
    const anonymous = await StreamsinkClient.connect(worker.advertiseAddress);
    clients.push(anonymous);
    expect(await statusOf(anonymous.getSession("r"))).toBe(Status.UNAUTHENTICATED);
    expect(lines.join("")).not.toContain(NEW_TOKEN);
  });
});

describe("JWT key rotation", () => {
  it("accepts tokens of the new key and refuses the old one's once the key file changes", async () => {
    const sec = securityDir();
    const [first, second] = [rsaKeys(), rsaKeys()];
    const keyFile = join(sec.dir, "jwt.pem");
    writeFileSync(keyFile, first.publicPem);
    const args = [
      "--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
      "--snapshot-dir", join(sec.dir, "snapshots"), "--jwt-public-key-file", keyFile, "--jwt-issuer", "iss", "--jwt-audience", "aud", "--tenants-refresh-ms", "100",
    ];
    const worker = await Worker.start(loadWorkerConfig(args, {}), { log: createLogger("error") });
    const token = (key: typeof first) => signJwt({ alg: "RS256" }, { iss: "iss", aud: "aud", exp: nowSeconds() + 600, tenant: "acme" }, key.privateKey);
    const oldClient = await StreamsinkClient.connect(worker.advertiseAddress, { bearerToken: token(first) });
    const newClient = await StreamsinkClient.connect(worker.advertiseAddress, { bearerToken: token(second) });
    try {
      await oldClient.append({ sessionId: "k", input: { tokens: [1, 2] } });
      expect(await statusOf(newClient.getSession("k"))).toBe(Status.UNAUTHENTICATED);
      writeFileSync(`${keyFile}.new`, second.publicPem);
      renameSync(`${keyFile}.new`, keyFile);
      let code = -1;
      for (let i = 0; i < 200 && code !== Status.OK; i++) {
        code = await newClient.getSession("k").then(() => Status.OK, (err: { code: number }) => err.code);
        if (code !== Status.OK) await new Promise((r) => setTimeout(r, 50));
      }
      expect(code).toBe(Status.OK);
      expect(await statusOf(oldClient.getSession("k"))).toBe(Status.UNAUTHENTICATED);
    } finally {
      oldClient.close();
      newClient.close();
      await worker.stop();
    }
  });
});

describe("tenants file at start", () => {
  it("refuses a tenants file without tokens when no JWT key is configured (nobody could call)", async () => {
    const sec = securityDir();
    writeFileSync(sec.tenantsFile, JSON.stringify({ tokens: [] }));
    const args = ["--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--tenants-file", sec.tenantsFile];
    await expect(Worker.start(loadWorkerConfig(args, {}), { log: createLogger("error") })).rejects.toThrow(/lists no tokens/);
  });
});
