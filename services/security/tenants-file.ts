/**
 * The tenants file: static bearer tokens and per-tenant limit overrides.
 *
 * ```json
 * {
 *   "tokens": [
 *     { "tenant": "acme", "sha256": "<hex SHA-256 of the token>" },
 *     { "tenant": "beta", "token": "<the token itself>", "permissions": ["read"] }
 *   ],
 *   "tenants": { "acme": { "maxSessions": 100, "requestsPerSecond": 50 } }
 * }
 * ```
 *
 * Storing the SHA-256 rather than the token keeps the file harmless to read.
 * Validation errors name the entry, never a token.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

import { DEFAULT_TENANT, isTenantName } from "./tenant.js";

export type Permission = "read" | "write";
export const ALL_PERMISSIONS: readonly Permission[] = ["read", "write"];

/** Per-tenant limits; 0 means no limit of that kind. */
export interface TenantLimits {
  /** Sessions a tenant holds on one worker. */
  maxSessions: number;
  /** Tokens in one append or prompt. */
  maxInputTokens: number;
  /** max_new_tokens of one generate. */
  maxNewTokens: number;
  /** Sustained requests per second (token bucket refill), per worker. */
  requestsPerSecond: number;
  /** Requests allowed at once above the sustained rate (bucket size). */
  burst: number;
  /** Generate and Stream calls open at once, per worker. */
  maxConcurrentStreams: number;
}

export const UNLIMITED: TenantLimits = { maxSessions: 0, maxInputTokens: 0, maxNewTokens: 0, requestsPerSecond: 0, burst: 0, maxConcurrentStreams: 0 };

export interface StaticToken {
  /** SHA-256 of the token, hex. */
  sha256: string;
  tenant: string;
  permissions: readonly Permission[];
}

export interface TenantsFile {
  tokens: StaticToken[];
  limits: Map<string, Partial<TenantLimits>>;
}

export class TenantsFileError extends Error {
  override readonly name = "TenantsFileError";
  readonly code = "E_CONFIG";
}

export function sha256Hex(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

const LIMIT_KEYS = Object.keys(UNLIMITED) as Array<keyof TenantLimits>;

function tenantLimits(raw: unknown, where: string): Partial<TenantLimits> {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new TenantsFileError(`${where} must be an object`);
  const out: Partial<TenantLimits> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (!LIMIT_KEYS.includes(key as keyof TenantLimits)) throw new TenantsFileError(`${where}: unknown limit "${key}" (${LIMIT_KEYS.join(", ")})`);
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) throw new TenantsFileError(`${where}.${key} must be a non-negative number`);
    out[key as keyof TenantLimits] = value;
  }
  return out;
}

export function parseTenantsFile(text: string, source = "tenants file"): TenantsFile {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new TenantsFileError(`${source} is not JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new TenantsFileError(`${source} must hold a JSON object`);
  const o = parsed as Record<string, unknown>;
  const tokens: StaticToken[] = [];
  const rawTokens = o.tokens ?? [];
  if (!Array.isArray(rawTokens)) throw new TenantsFileError(`${source}: "tokens" must be an array`);
  const seen = new Set<string>();
  rawTokens.forEach((entry: unknown, i) => {
    const where = `${source}: tokens[${i}]`;
    if (typeof entry !== "object" || entry === null) throw new TenantsFileError(`${where} must be an object`);
    const e = entry as Record<string, unknown>;
    if (!isTenantName(e.tenant) || e.tenant === DEFAULT_TENANT)
      throw new TenantsFileError(`${where}: "tenant" must match [a-z0-9][a-z0-9._-]{0,62} and not be "${DEFAULT_TENANT}"`);
    let hash: string;
    if (typeof e.sha256 === "string" && e.token === undefined) {
      if (!/^[0-9a-fA-F]{64}$/.test(e.sha256)) throw new TenantsFileError(`${where}: "sha256" must be 64 hex digits`);
      hash = e.sha256.toLowerCase();
    } else if (typeof e.token === "string" && e.sha256 === undefined) {
      if (e.token.length < 16) throw new TenantsFileError(`${where}: "token" must be at least 16 characters`);
      hash = sha256Hex(e.token);
    } else {
      throw new TenantsFileError(`${where}: give exactly one of "token" or "sha256"`);
    }
    if (seen.has(hash)) throw new TenantsFileError(`${where}: the same token is listed twice`);
    seen.add(hash);
    let permissions: readonly Permission[] = ALL_PERMISSIONS;
    if (e.permissions !== undefined) {
      if (!Array.isArray(e.permissions) || e.permissions.length === 0 || e.permissions.some((p) => !ALL_PERMISSIONS.includes(p as Permission)))
        throw new TenantsFileError(`${where}: "permissions" must be a non-empty array of "read" and "write"`);
      permissions = [...new Set(e.permissions as Permission[])];
    }
    tokens.push({ sha256: hash, tenant: e.tenant, permissions });
  });
  const limits = new Map<string, Partial<TenantLimits>>();
  const rawTenants = o.tenants ?? {};
  if (typeof rawTenants !== "object" || rawTenants === null || Array.isArray(rawTenants)) throw new TenantsFileError(`${source}: "tenants" must be an object`);
  for (const [tenant, value] of Object.entries(rawTenants)) {
    if (!isTenantName(tenant)) throw new TenantsFileError(`${source}: tenants: "${tenant}" is not a valid tenant name`);
    const v = value as Record<string, unknown> | null;
    limits.set(tenant, tenantLimits(v && typeof v === "object" && "limits" in v ? v.limits : v, `${source}: tenants.${tenant}`));
  }
  for (const key of Object.keys(o)) if (key !== "tokens" && key !== "tenants") throw new TenantsFileError(`${source}: unknown key "${key}"`);
  return { tokens, limits };
}

export function loadTenantsFile(path: string): TenantsFile {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new TenantsFileError(`cannot read the tenants file ${path}: ${(err as Error).message}`);
  }
  return parseTenantsFile(text, path);
}
