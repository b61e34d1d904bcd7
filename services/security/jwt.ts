/**
 * JSON Web Token verification (RFC 7519) for bearer tokens, with node:crypto
 * only. Just the asymmetric algorithms a deployment configures a public key
 * for: RS256 (RSA PKCS#1 v1.5 + SHA-256) and ES256 (P-256, signature as the
 * raw 64-byte r||s of JWS, hence `dsaEncoding: "ieee-p1363"`). The algorithm
 * must match the key's type, so an RSA public key can never be used as an
 * HMAC secret ("alg confusion") and "none" is never accepted.
 *
 * Every failure is a JwtError whose message is safe to log: it names the
 * check that failed, never the token.
 */
import { createPublicKey, type KeyObject, verify } from "node:crypto";

export type JwtAlgorithm = "RS256" | "ES256";

export interface JwtVerifierOptions {
  /** PEM (SPKI) public key. */
  publicKey: string | Buffer;
  /** Required `iss`. */
  issuer: string;
  /** Required `aud` (the token's `aud` may be a string or an array containing it). */
  audience: string;
  /** Tolerated clock difference for `exp` and `nbf`, in seconds. Default 60. */
  clockToleranceSeconds?: number;
}

export class JwtError extends Error {
  override readonly name = "JwtError";
}

export type JwtClaims = Record<string, unknown>;

function base64urlJson(part: string, what: string): Record<string, unknown> {
  if (!/^[A-Za-z0-9_-]*$/.test(part)) throw new JwtError(`token ${what} is not base64url`);
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
  } catch {
    throw new JwtError(`token ${what} is not JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new JwtError(`token ${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

export class JwtVerifier {
  readonly #key: KeyObject;
  readonly #algorithm: JwtAlgorithm;
  readonly #issuer: string;
  readonly #audience: string;
  readonly #tolerance: number;

  constructor(options: JwtVerifierOptions) {
    this.#key = createPublicKey(options.publicKey);
    const type = this.#key.asymmetricKeyType;
    if (type === "rsa") this.#algorithm = "RS256";
    else if (type === "ec" && this.#key.asymmetricKeyDetails?.namedCurve === "prime256v1") this.#algorithm = "ES256";
    else throw new JwtError(`unsupported JWT public key type ${String(type)} (RSA for RS256 or P-256 EC for ES256)`);
    this.#issuer = options.issuer;
    this.#audience = options.audience;
    this.#tolerance = options.clockToleranceSeconds ?? 60;
  }

  get algorithm(): JwtAlgorithm {
    return this.#algorithm;
  }

  /** True when `token` has the shape of a JWS compact serialisation (three base64url parts). */
  static looksLikeJwt(token: string): boolean {
    return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token);
  }

  /** The verified claims; throws JwtError. `nowSeconds` is for tests. */
  verify(token: string, nowSeconds = Math.floor(Date.now() / 1000)): JwtClaims {
    if (token.length > 16 * 1024) throw new JwtError("token is longer than 16 KiB");
    const parts = token.split(".");
    if (parts.length !== 3) throw new JwtError("token is not a JWS compact serialisation");
    const [headerPart, payloadPart, signaturePart] = parts as [string, string, string];
    const header = base64urlJson(headerPart, "header");
    if (header.alg !== this.#algorithm) throw new JwtError(`token algorithm ${JSON.stringify(header.alg)} is not the configured ${this.#algorithm}`);
    if (header.crit !== undefined) throw new JwtError("token has critical header extensions");
    if (!/^[A-Za-z0-9_-]+$/.test(signaturePart)) throw new JwtError("token signature is missing or not base64url");
    const signature = Buffer.from(signaturePart, "base64url");
    const signed = Buffer.from(`${headerPart}.${payloadPart}`, "ascii");
    const ok =
      this.#algorithm === "RS256"
        ? verify("sha256", signed, this.#key, signature)
        : signature.length === 64 && verify("sha256", signed, { key: this.#key, dsaEncoding: "ieee-p1363" }, signature);
    if (!ok) throw new JwtError("token signature does not verify");
    const claims = base64urlJson(payloadPart, "payload");
    if (claims.iss !== this.#issuer) throw new JwtError("token issuer is not the configured one");
    const aud = claims.aud;
    if (!(aud === this.#audience || (Array.isArray(aud) && aud.includes(this.#audience)))) throw new JwtError("token audience does not include this service");
    if (typeof claims.exp !== "number") throw new JwtError("token has no expiry (exp)");
    if (nowSeconds > claims.exp + this.#tolerance) throw new JwtError("token has expired");
    if (claims.nbf !== undefined && (typeof claims.nbf !== "number" || nowSeconds + this.#tolerance < claims.nbf)) throw new JwtError("token is not valid yet (nbf)");
    return claims;
  }
}
