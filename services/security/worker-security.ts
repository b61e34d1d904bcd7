/**
 * The security parts of a worker, built from its settings: who may call
 * (Authenticator), how much (TenantLimiter), the gRPC server's TLS, and how
 * it forwards to other workers (peer signatures, TLS with its own client
 * certificate). Also the warnings for links left in plaintext in a cluster.
 */
import { readFileSync, type Stats, unwatchFile, watchFile } from "node:fs";

import type { ChannelCredentials, ServerCredentials } from "@grpc/grpc-js";

import type { SecuritySettings, WorkerConfig } from "../worker/config.js";
import { ConfigError } from "../worker/config.js";
import type { Logger } from "../worker/logger.js";
import type { TenantPolicy } from "../worker/session-host.js";
import { Authenticator } from "./authenticator.js";
import { JwtVerifier } from "./jwt.js";
import { signForward } from "./peer-signature.js";
import { TenantLimiter } from "./tenant-limiter.js";
import { DEFAULT_TENANT, tenantOfKey } from "./tenant.js";
import { loadTenantsFile, type TenantsFile } from "./tenants-file.js";
import { clientCredentials, watchedServerCredentials } from "./tls.js";

export interface WorkerSecurity {
  authenticator: Authenticator;
  limiter: TenantLimiter;
  /** Per-tenant session and size limits for the SessionHost. */
  tenantPolicy: TenantPolicy;
  serverCredentials: ServerCredentials | undefined;
  forwarding: { sign?: (tenant: string) => Record<string, string>; credentials?: () => ChannelCredentials };
  /** Stops watching the tenants file. Safe to call twice. */
  close(): void;
}

function readSecret(path: string, what: string): Buffer {
  let text: string;
  try {
    text = readFileSync(path, "utf8").trim();
  } catch (err) {
    throw new ConfigError(`cannot read the ${what} ${path}: ${(err as Error).message}`);
  }
  if (text.length < 16) throw new ConfigError(`the ${what} ${path} must hold at least 16 characters`);
  return Buffer.from(text, "utf8");
}

/** Calls `reload` when the file changes (checked every `intervalMs`); returns the function that stops watching. */
function watchSettingsFile(path: string, intervalMs: number, log: Logger | undefined, reload: () => Record<string, unknown>): () => void {
  const listener = (now: Stats, before: Stats): void => {
    if (now.mtimeMs === before.mtimeMs && now.ino === before.ino && now.size === before.size) return;
    try {
      log?.info("settings file reloaded", { file: path, ...reload() });
    } catch (err) {
      log?.warn("settings file not reloaded; what was in force stays", { file: path, error: (err as Error).message });
    }
  };
  watchFile(path, { interval: intervalMs, persistent: false }, listener);
  // Only this listener: another worker in the same process may watch the same file.
  return () => unwatchFile(path, listener);
}

export function buildWorkerSecurity(settings: SecuritySettings, log?: Logger): WorkerSecurity {
  let tenants: TenantsFile = { tokens: [], limits: new Map() };
  if (settings.tenantsFile) {
    try {
      tenants = loadTenantsFile(settings.tenantsFile);
    } catch (err) {
      throw new ConfigError((err as Error).message);
    }
  }
  let jwt: JwtVerifier | undefined;
  if (settings.jwt) {
    try {
      jwt = new JwtVerifier({ publicKey: readFileSync(settings.jwt.publicKeyFile), issuer: settings.jwt.issuer, audience: settings.jwt.audience });
    } catch (err) {
      throw new ConfigError(`--jwt-public-key-file ${settings.jwt.publicKeyFile}: ${(err as Error).message}`);
    }
  }
  const peerSecret = settings.peerSecretFile ? readSecret(settings.peerSecretFile, "peer secret file") : undefined;
  const authenticator = new Authenticator({
    tokens: tenants.tokens,
    ...(jwt ? { jwt, jwtTenantClaim: settings.jwt!.tenantClaim } : {}),
    ...(peerSecret ? { peerSecret } : {}),
    required: settings.tenantsFile !== undefined || jwt !== undefined,
  });
  if (settings.tenantsFile && tenants.tokens.length === 0 && !jwt)
    throw new ConfigError(`the tenants file ${settings.tenantsFile} lists no tokens and no JWT key is configured: nobody could call`);
  const limiter = new TenantLimiter({ defaults: settings.tenantLimits, overrides: tenants.limits, global: settings.globalLimits });
  // A changed tenants file (a token added or revoked, a limit changed) or JWT key applies without a
  // restart; a file that does not load is reported and what is in force stays.
  const watchers: Array<() => void> = [];
  const tenantsFile = settings.tenantsFile;
  if (tenantsFile)
    watchers.push(
      watchSettingsFile(tenantsFile, settings.tenantsRefreshMs, log, () => {
        const next = loadTenantsFile(tenantsFile);
        authenticator.replaceTokens(next.tokens);
        limiter.replaceOverrides(next.limits);
        return { tokens: next.tokens.length, tenants: new Set(next.tokens.map((t) => t.tenant)).size };
      }),
    );
  const jwtSettings = settings.jwt;
  if (jwtSettings)
    watchers.push(
      watchSettingsFile(jwtSettings.publicKeyFile, settings.tenantsRefreshMs, log, () => {
        const verifier = new JwtVerifier({ publicKey: readFileSync(jwtSettings.publicKeyFile), issuer: jwtSettings.issuer, audience: jwtSettings.audience });
        authenticator.replaceJwt(verifier);
        return { algorithm: verifier.algorithm };
      }),
    );
  const close = (): void => {
    for (const unwatch of watchers.splice(0)) unwatch();
  };
  const tenantOf = authenticator.enabled ? tenantOfKey : () => DEFAULT_TENANT;
  const tls = settings.grpcTls;
  const forwarding: WorkerSecurity["forwarding"] = {};
  if (peerSecret) forwarding.sign = (tenant) => signForward(peerSecret, tenant);
  if (tls) {
    forwarding.credentials = () =>
      clientCredentials({
        ...(tls.caFile ? { caFile: tls.caFile } : {}),
        // A worker presents its own certificate to a peer that requires mTLS.
        ...(tls.clientCaFile ? { certFile: tls.certFile, keyFile: tls.keyFile } : {}),
      });
  }
  return {
    authenticator,
    limiter,
    tenantPolicy: { tenantOf, limitsFor: (tenant) => limiter.limitsFor(tenant) },
    serverCredentials: tls
      ? watchedServerCredentials({ certFile: tls.certFile, keyFile: tls.keyFile, refreshMs: tls.refreshMs, ...(tls.clientCaFile ? { clientCaFile: tls.clientCaFile } : {}) })
      : undefined,
    forwarding,
    close,
  };
}

function isLoopback(host: string): boolean {
  return host === "::1" || host === "[::1]" || host === "localhost" || host.startsWith("127.");
}

/** Warnings for a deployment that leaves links in plaintext or open; each names the setting that fixes it. */
export function plaintextWarnings(config: WorkerConfig): string[] {
  const warnings: string[] = [];
  const cluster = config.kafkaBrokers.length > 0;
  if (cluster && !config.security.grpcTls)
    warnings.push("cluster configured without gRPC TLS: client and forwarded calls travel in plaintext (set --grpc-tls-cert/--grpc-tls-key)");
  if (cluster && !config.kafkaSsl) warnings.push("Kafka without TLS: session records travel in plaintext (set --kafka-ssl true)");
  if (config.redisUrl?.startsWith("redis://") && !isLoopback(new URL(config.redisUrl).hostname))
    warnings.push("Redis without TLS: snapshots travel in plaintext (use a rediss:// URL)");
  const authOn = config.security.tenantsFile !== undefined || config.security.jwt !== undefined;
  if (cluster && !authOn) warnings.push(`gRPC on ${config.grpcHost} without authentication: anyone who reaches it can use every session (set --tenants-file or --jwt-public-key-file)`);
  return warnings;
}

export function logPlaintextWarnings(config: WorkerConfig, log: Logger): void {
  for (const warning of plaintextWarnings(config)) log.warn(warning);
}

/** ioredis options for the ACL user and TLS files (the URL's own user, password and rediss:// still apply). */
export function redisConnectionOptions(settings: SecuritySettings["redis"]): { username?: string; password?: string; tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer } } {
  const read = (path: string | undefined) => (path ? readFileSync(path) : undefined);
  const tls =
    settings.caFile || settings.certFile
      ? {
          ...(settings.caFile ? { ca: read(settings.caFile)! } : {}),
          ...(settings.certFile ? { cert: read(settings.certFile)!, key: read(settings.keyFile)! } : {}),
        }
      : undefined;
  return {
    ...(settings.username ? { username: settings.username } : {}),
    ...(settings.password ? { password: settings.password } : {}),
    ...(tls ? { tls } : {}),
  };
}
