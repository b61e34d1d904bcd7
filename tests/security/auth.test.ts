/**
 * Authentication and tenant isolation on a real embedded worker over gRPC:
 * static bearer tokens (plain and stored as SHA-256), JWT RS256 and ES256,
 * read-only tokens, forwarded calls that must carry a worker's signature.
 * One tenant can neither read, feed, close nor guess another's session.
 * Tokens never appear in the log or the metrics.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";

import { status as Status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { FORWARDED_METADATA_KEY } from "../../services/grpc/session-gateway.js";
import { JwtError, JwtVerifier } from "../../services/security/jwt.js";
import { signForward } from "../../services/security/peer-signature.js";
import { loadWorkerConfig } from "../../services/worker/config.js";
import { createLogger } from "../../services/worker/logger.js";
import { Worker } from "../../services/worker/worker.js";
import { loadGolden, modelDir } from "../helpers/fixtures.js";
import { ecKeys, nowSeconds, PEER_SECRET, rsaKeys, securityDir, signJwt, statusOf, TOKENS } from "./security-helpers.js";

const ids = loadGolden("llama-gqa").cases[0]!.ids;
const ISSUER = "https://issuer.test";
const AUDIENCE = "streamsink";

describe("JWT verification", () => {
  const rsa = rsaKeys();
  const ec = ecKeys();
  const claims = { iss: ISSUER, aud: AUDIENCE, exp: nowSeconds() + 600, tenant: "acme" };

  it("accepts RS256 and ES256 tokens signed with the configured key", () => {
    const r = new JwtVerifier({ publicKey: rsa.publicPem, issuer: ISSUER, audience: AUDIENCE });
    expect(r.verify(signJwt({ alg: "RS256", typ: "JWT" }, claims, rsa.privateKey)).tenant).toBe("acme");
    const e = new JwtVerifier({ publicKey: ec.publicPem, issuer: ISSUER, audience: AUDIENCE });
    expect(e.algorithm).toBe("ES256");
    expect(e.verify(signJwt({ alg: "ES256" }, { ...claims, aud: ["other", AUDIENCE] }, ec.privateKey)).tenant).toBe("acme");
  });

  it("refuses every token that is not exactly right, naming the check", () => {
    const v = new JwtVerifier({ publicKey: rsa.publicPem, issuer: ISSUER, audience: AUDIENCE });
    const other = rsaKeys();
    const good = signJwt({ alg: "RS256" }, claims, rsa.privateKey);
    const [h, p] = good.split(".");
    const cases: Array<[string, string, RegExp]> = [
      ["other key", signJwt({ alg: "RS256" }, claims, other.privateKey), /signature/],
      ["wrong issuer", signJwt({ alg: "RS256" }, { ...claims, iss: "https://evil" }, rsa.privateKey), /issuer/],
      ["wrong audience", signJwt({ alg: "RS256" }, { ...claims, aud: "else" }, rsa.privateKey), /audience/],
      ["expired", signJwt({ alg: "RS256" }, { ...claims, exp: nowSeconds() - 3600 }, rsa.privateKey), /expired/],
      ["no exp", signJwt({ alg: "RS256" }, { iss: ISSUER, aud: AUDIENCE, tenant: "acme" }, rsa.privateKey), /exp/],
      ["not yet valid", signJwt({ alg: "RS256" }, { ...claims, nbf: nowSeconds() + 3600 }, rsa.privateKey), /nbf/],
      ["alg none", `${Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url")}.${p}.`, /algorithm/],
      ["HS256 confusion", `${Buffer.from(JSON.stringify({ alg: "HS256" })).toString("base64url")}.${p}.AAAA`, /algorithm/],
      ["tampered payload", `${h}.${Buffer.from(JSON.stringify({ ...claims, tenant: "beta" })).toString("base64url")}.${good.split(".")[2]}`, /signature/],
      ["garbage", "a.b.c", /header/],
    ];
    for (const [what, token, reason] of cases) {
      let error: unknown;
      try {
        v.verify(token);
      } catch (err) {
        error = err;
      }
      expect(error, what).toBeInstanceOf(JwtError);
      expect((error as Error).message, what).toMatch(reason);
      expect((error as Error).message, what).not.toContain(token);
    }
  });
});

describe("tenants on an embedded worker", () => {
  const sec = securityDir();
  const rsa = rsaKeys();
  const logLines: string[] = [];
  let worker: Worker;
  const clients: StreamsinkClient[] = [];
  const connect = async (token?: string) => {
    const c = await StreamsinkClient.connect(worker.advertiseAddress, token !== undefined ? { bearerToken: token } : {});
    clients.push(c);
    return c;
  };
  const jwt = (extra: Record<string, unknown> = {}) =>
    signJwt({ alg: "RS256" }, { iss: ISSUER, aud: AUDIENCE, exp: nowSeconds() + 600, tenant: "gamma", ...extra }, rsa.privateKey);

  beforeAll(async () => {
    const keyFile = join(sec.dir, "jwt.pem");
    writeFileSync(keyFile, rsa.publicPem);
    const args = [
      "--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0",
      "--snapshot-dir", join(sec.dir, "snapshots"), "--sinks", "4", "--window", "28",
      "--tenants-file", sec.tenantsFile, "--peer-secret-file", sec.peerSecretFile,
      "--jwt-public-key-file", keyFile, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE,
    ];
    worker = await Worker.start(loadWorkerConfig(args, {}), { log: createLogger("debug", {}, (line) => logLines.push(line)) });
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await worker?.stop();
  });

  it("refuses calls without valid credentials with UNAUTHENTICATED", async () => {
    const anonymous = await connect();
    expect(await statusOf(anonymous.append({ sessionId: "s", input: { tokens: [1, 2] } }))).toBe(Status.UNAUTHENTICATED);
    expect(await statusOf(anonymous.getSession("s"))).toBe(Status.UNAUTHENTICATED);
    const wrong = await connect("not-a-token-at-all-0123456789");
    expect(await statusOf(wrong.append({ sessionId: "s", input: { tokens: [1, 2] } }))).toBe(Status.UNAUTHENTICATED);
    expect(await statusOf(anonymous.append({ sessionId: "s", input: { tokens: [1] } }, { metadata: { authorization: "Basic abc" } }))).toBe(Status.UNAUTHENTICATED);
    const expired = await connect(jwt({ exp: nowSeconds() - 3600 }));
    expect(await statusOf(expired.getSession("s"))).toBe(Status.UNAUTHENTICATED);
    const stream = anonymous.openStream();
    stream.append({ sessionId: "s", input: { tokens: [1] } });
    stream.end();
    expect(await statusOf((async () => {
      for await (const e of stream) void e;
    })())).toBe(Status.UNAUTHENTICATED);
    // Health stays open for probes.
    expect(await anonymous.health()).toBe("SERVING");
  });

  it("keeps each tenant's sessions apart: no read, feed, close or guess across tenants", async () => {
    const acme = await connect(TOKENS.acme);
    const beta = await connect(TOKENS.beta);
    const gamma = await connect(jwt());
    await acme.append({ sessionId: "shared", input: { tokens: ids.slice(0, 20) } });
    // Same id, other tenant: not visible, and using it makes a separate session.
    expect(await statusOf(beta.getSession("shared"))).toBe(Status.NOT_FOUND);
    expect(await statusOf(gamma.getSession("shared"))).toBe(Status.NOT_FOUND);
    expect(await statusOf((async () => {
      for await (const e of beta.generate({ sessionId: "shared", maxNewTokens: 2 })) void e;
    })())).toBe(Status.INVALID_ARGUMENT); // beta's "shared" is empty: no context to generate from
    await beta.append({ sessionId: "shared", input: { tokens: ids.slice(0, 3) } });
    expect((await beta.getSession("shared")).tokensSeen).toBe(3);
    expect((await acme.getSession("shared")).tokensSeen).toBe(20);
    // Guessing the internal key does not reach it either.
    for (const guess of ["acme/shared", "/shared", "acme//shared", "../acme/shared", "shared\u0000"])
      expect(await statusOf(beta.getSession(guess)), guess).toBe(Status.NOT_FOUND);
    // Closing "shared" as beta closes beta's only.
    expect((await beta.closeSession("shared")).existed).toBe(true);
    expect((await acme.getSession("shared")).tokensSeen).toBe(20);
    expect((await beta.closeSession("shared")).existed).toBe(false);
    // The id is echoed back as the tenant sent it.
    const info = await acme.getSession("shared");
    expect(info.sessionId).toBe("shared");
    // JWT tenant gamma: its own namespace too.
    await gamma.append({ sessionId: "shared", input: { tokens: ids.slice(0, 5) } });
    expect((await gamma.getSession("shared")).tokensSeen).toBe(5);
    expect((await acme.getSession("shared")).tokensSeen).toBe(20);
    // Generation continues acme's own context only.
    const tokens: number[] = [];
    for await (const e of acme.generate({ sessionId: "shared", maxNewTokens: 3 })) if (e.type === "token") tokens.push(e.id);
    expect(tokens).toHaveLength(3);
    expect((await acme.getSession("shared")).tokensSeen).toBe(23);
    expect((await gamma.getSession("shared")).tokensSeen).toBe(5);
  });

  it("answers PERMISSION_DENIED to a read-only token writing and to a client posing as a worker", async () => {
    const reader = await connect(TOKENS.acmeReader);
    expect((await reader.getSession("shared")).tokensSeen).toBeGreaterThan(0);
    expect(await statusOf(reader.append({ sessionId: "shared", input: { tokens: [1] } }))).toBe(Status.PERMISSION_DENIED);
    expect(await statusOf(reader.closeSession("shared"))).toBe(Status.PERMISSION_DENIED);
    const scoped = await connect(jwt({ scope: "streamsink.read", tenant: "acme" }));
    expect((await scoped.getSession("shared")).sessionId).toBe("shared");
    expect(await statusOf(scoped.append({ sessionId: "shared", input: { tokens: [1] } }))).toBe(Status.PERMISSION_DENIED);
    expect(await statusOf((await connect(jwt({ tenant: "Not A Tenant" }))).getSession("x"))).toBe(Status.PERMISSION_DENIED);

    // A client (with a valid token) marking its call as forwarded, to pick a tenant.
    const beta = await connect(TOKENS.beta);
    const posing = { metadata: { [FORWARDED_METADATA_KEY]: "1", "x-streamsink-tenant": "acme" } };
    expect(await statusOf(beta.getSession("shared", posing))).toBe(Status.PERMISSION_DENIED);
    // A forged signature (wrong secret) is UNAUTHENTICATED.
    const forged = { metadata: { [FORWARDED_METADATA_KEY]: "1", ...signForward(Buffer.from("a-guessed-secret-0000000000"), "acme") } };
    expect(await statusOf(beta.getSession("shared", forged))).toBe(Status.UNAUTHENTICATED);
    // A signature for beta cannot be re-labelled as acme.
    const relabelled = { ...signForward(Buffer.from(PEER_SECRET), "beta"), "x-streamsink-tenant": "acme" };
    expect(await statusOf(beta.getSession("shared", { metadata: { [FORWARDED_METADATA_KEY]: "1", ...relabelled } }))).toBe(Status.UNAUTHENTICATED);
    // A real worker's signature for acme reaches acme's session, and only acme's.
    const peer = await connect();
    const asWorker = (tenant: string) => ({ metadata: { [FORWARDED_METADATA_KEY]: "1", ...signForward(Buffer.from(PEER_SECRET), tenant) } });
    expect((await peer.getSession("shared", asWorker("acme"))).tokensSeen).toBe(23);
    expect(await statusOf(peer.getSession("shared", asWorker("beta")))).toBe(Status.NOT_FOUND);
  });

  it("never writes a token or secret to the log or the metrics", async () => {
    const metrics = await worker.metrics.registry.metrics();
    expect(metrics).toMatch(/streamsink_auth_failures_total\{reason="bad_token"\} [1-9]/);
    expect(metrics).toMatch(/streamsink_auth_failures_total\{reason="not_a_peer"\} [1-9]/);
    const everything = logLines.join("") + metrics;
    for (const secret of [...Object.values(TOKENS), PEER_SECRET, "not-a-token-at-all-0123456789", jwt().split(".")[2]!]) expect(everything).not.toContain(secret);
  });
});
