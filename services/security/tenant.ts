/**
 * Tenants and the session keys that keep them apart.
 *
 * A client names a session by its own id; below the gRPC layer (session
 * host, Kafka record keys, snapshots, ownership) a session is known by its
 * key: `<tenant>/<id>` for a named tenant, the bare id for the default tenant
 * of a deployment without authentication. Tenant names cannot contain "/",
 * so the first "/" of a key splits it unambiguously: two tenants can never
 * produce the same key, whatever ids they choose, and no id a tenant sends can
 * reach outside its own prefix. With authentication on, "default" is reserved
 * (no token maps to it), so unprefixed keys are reachable only through Kafka
 * records written without a tenant.
 */
import { InvalidRequestError } from "../worker/errors.js";

/** The only tenant when no authentication is configured. */
export const DEFAULT_TENANT = "default";

/** Lower-case letters, digits, ".", "_" and "-"; 1 to 63 characters; no "/". */
export const TENANT_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Longest session key (the Kafka record key and the session host's limit). */
export const MAX_SESSION_KEY_LENGTH = 256;

export function isTenantName(value: unknown): value is string {
  return typeof value === "string" && TENANT_PATTERN.test(value);
}

/** The key of a tenant's session id. */
export function sessionKey(tenant: string, id: string): string {
  const key = tenant === DEFAULT_TENANT ? id : `${tenant}/${id}`;
  if (Buffer.byteLength(key, "utf8") > MAX_SESSION_KEY_LENGTH)
    throw new InvalidRequestError(`session_id is too long: with the tenant prefix it must fit in ${MAX_SESSION_KEY_LENGTH} bytes`);
  return key;
}

/** The id a tenant knows a key by; the key itself when it is not the tenant's (never the case for keys made by sessionKey). */
export function sessionIdOf(tenant: string, key: string): string {
  if (tenant === DEFAULT_TENANT) return key;
  const prefix = `${tenant}/`;
  return key.startsWith(prefix) ? key.slice(prefix.length) : key;
}

/** The tenant a key belongs to (the default tenant for an unprefixed key). */
export function tenantOfKey(key: string): string {
  const slash = key.indexOf("/");
  if (slash <= 0) return DEFAULT_TENANT;
  const candidate = key.slice(0, slash);
  return isTenantName(candidate) ? candidate : DEFAULT_TENANT;
}
