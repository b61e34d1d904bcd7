/**
 * Who is calling: turns a call's metadata into a Principal (tenant and
 * permissions) or an UnauthenticatedError / PermissionDeniedError.
 *
 * - `authorization: Bearer <token>`: a JWT when a JWT verifier is configured
 *   and the token has the JWS shape, otherwise a static token from the
 *   tenants file (looked up by its SHA-256).
 * - A call forwarded by another worker (FORWARDED_METADATA_KEY) carries the
 *   tenant and a peer signature (peer-signature.ts) instead; a forwarded call
 *   without one is refused, so a client cannot pose as a worker.
 * - With no authentication configured every call is the default tenant with
 *   every permission (the embedded default on loopback).
 *
 * Error messages say which check failed and never contain the token.
 */
import type { Metadata } from "@grpc/grpc-js";

import { FORWARDED_METADATA_KEY } from "../grpc/session-gateway.js";
import { PermissionDeniedError, UnauthenticatedError } from "../worker/errors.js";
import { JwtError, JwtVerifier } from "./jwt.js";
import { PEER_SIGNATURE_KEY, PEER_TENANT_KEY, PEER_TIME_KEY, verifyForward } from "./peer-signature.js";
import { ALL_PERMISSIONS, type Permission, sha256Hex, type StaticToken } from "./tenants-file.js";
import { DEFAULT_TENANT, isTenantName } from "./tenant.js";

export interface Principal {
  tenant: string;
  permissions: readonly Permission[];
  /** How the caller proved itself. */
  via: "anonymous" | "token" | "jwt" | "peer";
}

export interface AuthenticatorOptions {
  /** Static bearer tokens (tenants file). */
  tokens?: readonly StaticToken[];
  jwt?: JwtVerifier;
  /** Claim holding the tenant in a JWT. Default "tenant". */
  jwtTenantClaim?: string;
  /** Secret shared by the workers; forwarded calls must be signed with it when set. */
  peerSecret?: Buffer;
  /**
   * Require bearer tokens even while no static token is listed (a tenants
   * file that may gain tokens on reload). Default: when tokens or a JWT
   * verifier are given. Authentication never turns off once on.
   */
  required?: boolean;
}

/** Why a call was refused, for the metric (never the token). */
export type AuthFailure = "missing_token" | "bad_token" | "expired_or_invalid_jwt" | "forbidden" | "bad_peer_signature" | "not_a_peer";

const ANONYMOUS: Principal = { tenant: DEFAULT_TENANT, permissions: ALL_PERMISSIONS, via: "anonymous" };

/** Permissions named in a JWT `scope` claim. */
const SCOPE_PERMISSIONS: Record<string, Permission> = { "streamsink.read": "read", "streamsink.write": "write" };

function single(metadata: Metadata, key: string): string | undefined {
  const values = metadata.get(key);
  if (values.length !== 1) return undefined;
  const v = values[0];
  return typeof v === "string" ? v : undefined;
}

export class Authenticator {
  #tokens: Map<string, StaticToken>;
  readonly #enabled: boolean;
  #jwt: JwtVerifier | undefined;
  readonly #tenantClaim: string;
  readonly #peerSecret: Buffer | undefined;
  #onFailure: (reason: AuthFailure) => void = () => undefined;

  constructor(options: AuthenticatorOptions = {}) {
    this.#tokens = new Map((options.tokens ?? []).map((t) => [t.sha256, t]));
    this.#jwt = options.jwt;
    this.#tenantClaim = options.jwtTenantClaim ?? "tenant";
    this.#peerSecret = options.peerSecret;
    this.#enabled = options.required ?? (this.#tokens.size > 0 || this.#jwt !== undefined);
  }

  /** Replaces the JWT verifier (a rotated public key). */
  replaceJwt(verifier: JwtVerifier): void {
    this.#jwt = verifier;
  }

  /** Replaces the static tokens (a reloaded tenants file); calls in flight keep the principal they got. */
  replaceTokens(tokens: readonly StaticToken[]): void {
    this.#tokens = new Map(tokens.map((t) => [t.sha256, t]));
  }

  /** True when clients must present a bearer token. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** Told about every refused call (for the metric). */
  onFailure(listener: (reason: AuthFailure) => void): void {
    this.#onFailure = listener;
  }

  /** The caller of a call that needs `permission`; throws UnauthenticatedError or PermissionDeniedError. */
  authenticate(metadata: Metadata, permission: Permission): Principal {
    try {
      return this.#authenticate(metadata, permission);
    } catch (err) {
      if (err instanceof AuthRefusal) {
        this.#onFailure(err.reason);
        throw err.error;
      }
      throw err;
    }
  }

  #authenticate(metadata: Metadata, permission: Permission): Principal {
    if (metadata.get(FORWARDED_METADATA_KEY).length > 0) return this.#peer(metadata);
    if (!this.enabled) return ANONYMOUS;
    const header = single(metadata, "authorization");
    if (header === undefined) throw refuse("missing_token", new UnauthenticatedError("this server requires a bearer token (authorization: Bearer <token>)"));
    const match = /^Bearer ([\x21-\x7e]+)$/i.exec(header);
    if (!match) throw refuse("bad_token", new UnauthenticatedError("the authorization header is not 'Bearer <token>'"));
    const token = match[1]!;
    const principal = this.#jwt && JwtVerifier.looksLikeJwt(token) ? this.#fromJwt(token) : this.#fromStatic(token);
    if (!principal.permissions.includes(permission))
      throw refuse("forbidden", new PermissionDeniedError(`tenant "${principal.tenant}" has no ${permission} permission with this token`));
    return principal;
  }

  #fromStatic(token: string): Principal {
    const entry = this.#tokens.get(sha256Hex(token));
    if (!entry) throw refuse("bad_token", new UnauthenticatedError("the bearer token is not valid"));
    return { tenant: entry.tenant, permissions: entry.permissions, via: "token" };
  }

  #fromJwt(token: string): Principal {
    let claims: Record<string, unknown>;
    try {
      claims = this.#jwt!.verify(token);
    } catch (err) {
      if (err instanceof JwtError) throw refuse("expired_or_invalid_jwt", new UnauthenticatedError(`the bearer token is not valid: ${err.message}`));
      throw err;
    }
    const tenant = claims[this.#tenantClaim];
    if (!isTenantName(tenant) || tenant === DEFAULT_TENANT)
      throw refuse("forbidden", new PermissionDeniedError(`the token's "${this.#tenantClaim}" claim does not name a tenant`));
    let permissions: readonly Permission[] = ALL_PERMISSIONS;
    if (claims.scope !== undefined) {
      if (typeof claims.scope !== "string") throw refuse("forbidden", new PermissionDeniedError("the token's scope claim is not a string"));
      permissions = [...new Set(claims.scope.split(" ").flatMap((s) => (SCOPE_PERMISSIONS[s] ? [SCOPE_PERMISSIONS[s]] : [])))];
    }
    return { tenant, permissions, via: "jwt" };
  }

  #peer(metadata: Metadata): Principal {
    if (!this.#peerSecret) {
      if (this.enabled) throw refuse("not_a_peer", new PermissionDeniedError("forwarded calls are not accepted: no peer secret is configured"));
      return ANONYMOUS;
    }
    const tenant = single(metadata, PEER_TENANT_KEY);
    const time = single(metadata, PEER_TIME_KEY);
    const signature = single(metadata, PEER_SIGNATURE_KEY);
    if (tenant === undefined || time === undefined || signature === undefined)
      throw refuse("not_a_peer", new PermissionDeniedError("forwarded calls are accepted only from workers"));
    if (!isTenantName(tenant) || !verifyForward(this.#peerSecret, tenant, time, signature))
      throw refuse("bad_peer_signature", new UnauthenticatedError("the forwarded call's peer signature does not verify"));
    return { tenant, permissions: ALL_PERMISSIONS, via: "peer" };
  }
}

class AuthRefusal {
  constructor(
    readonly reason: AuthFailure,
    readonly error: UnauthenticatedError | PermissionDeniedError,
  ) {}
}

function refuse(reason: AuthFailure, error: UnauthenticatedError | PermissionDeniedError): AuthRefusal {
  return new AuthRefusal(reason, error);
}
