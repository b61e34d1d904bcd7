/**
 * Shared by the security tests: a tenants file and peer secret in a temporary
 * directory, JWT signing with node:crypto, and status extraction.
 */
import { createHash, createPrivateKey, generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const TOKENS = {
  acme: "acme-token-0123456789abcdef",
  beta: "beta-token-0123456789abcdef",
  acmeReader: "acme-reader-0123456789abcdef",
  delta: "delta-token-0123456789abcdef",
} as const;

export const PEER_SECRET = "peer-secret-0123456789abcdef";

export interface SecurityDir {
  dir: string;
  tenantsFile: string;
  peerSecretFile: string;
}

/** A tenants file with acme (read/write and a read-only token) and beta; `limits` per tenant. */
export function securityDir(limits: Record<string, Record<string, number>> = {}): SecurityDir {
  const dir = mkdtempSync(join(tmpdir(), "streamsink-security-"));
  const tenantsFile = join(dir, "tenants.json");
  writeFileSync(
    tenantsFile,
    JSON.stringify({
      tokens: [
        { tenant: "acme", token: TOKENS.acme },
        // Stored hashed: sha256 of TOKENS.beta.
        { tenant: "beta", sha256: sha256(TOKENS.beta) },
        { tenant: "acme", token: TOKENS.acmeReader, permissions: ["read"] },
        { tenant: "delta", token: TOKENS.delta },
      ],
      tenants: limits,
    }),
  );
  const peerSecretFile = join(dir, "peer-secret");
  writeFileSync(peerSecretFile, PEER_SECRET + "\n");
  return { dir, tenantsFile, peerSecretFile };
}

function sha256(s: string): string {
  return createHash("sha256").update(s).digest("hex");
}

export function rsaKeys(): { privateKey: KeyObject; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { privateKey, publicPem: publicKey.export({ type: "spki", format: "pem" }).toString() };
}

export function ecKeys(): { privateKey: KeyObject; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { privateKey, publicPem: publicKey.export({ type: "spki", format: "pem" }).toString() };
}

/** A compact JWS; `alg` is written as given, signed per the key's type. */
export function signJwt(header: Record<string, unknown>, claims: Record<string, unknown>, key: KeyObject | string): string {
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const input = `${enc(header)}.${enc(claims)}`;
  const k = typeof key === "string" ? createPrivateKey(key) : key;
  const signature =
    k.asymmetricKeyType === "ec" ? sign("sha256", Buffer.from(input), { key: k, dsaEncoding: "ieee-p1363" }) : sign("sha256", Buffer.from(input), k);
  return `${input}.${signature.toString("base64url")}`;
}

export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** The gRPC status code a promise rejects with (throws if it resolves). */
export async function statusOf(promise: Promise<unknown>): Promise<number> {
  try {
    await promise;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === "number") return code;
    throw err;
  }
  throw new Error("the call succeeded");
}
