/**
 * Worker configuration from flags and STREAMSINK_* environment variables
 * (a flag wins over its env twin), validated at start with a message that
 * names the setting that is wrong.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

import type { Policy } from "../engine/index.js";
import { packageRoot } from "../package-root.js";
import { KAFKA_SECURITY_SETTINGS, type KafkaSasl, parseKafkaClientSecurity } from "../security/kafka-client-security.js";
import type { GlobalLimits } from "../security/tenant-limiter.js";
import type { TenantLimits } from "../security/tenants-file.js";
import { DEFAULT_LIMITS, type HostLimits } from "./session-host.js";

export interface WorkerConfig {
  model: string;
  backend: "cpu" | "cuda" | "auto";
  /** CUDA backend weight/cache type; undefined = bf16 (fp16 for fp16 checkpoints). */
  dtype?: "bf16" | "fp16" | "fp32";
  threads: number;
  grpcHost: string;
  grpcPort: number;
  /** Address other workers use to reach this one (forwarding). */
  advertiseAddress: string;
  metricsPort: number;
  policy: Policy;
  sinks: number;
  window: number;
  kafkaBrokers: string[];
  kafkaInputTopic: string;
  kafkaOutputTopic: string;
  kafkaDeadLetterTopic: string;
  kafkaGroup: string;
  kafkaPartitions: number;
  kafkaSsl: boolean;
  kafkaSasl: KafkaSasl | undefined;
  redisUrl: string | undefined;
  snapshotDir: string;
  /** Embedded: snapshot cadence. Cluster: checkpoint (snapshot + commit) cadence. */
  snapshotIntervalMs: number;
  /** Cluster: also checkpoint when a session took this many tokens since the last one (0 = off). */
  snapshotEveryTokens: number;
  /** Snapshots of idle sessions expire after this long (Redis). */
  snapshotTtlSeconds: number;
  limits: HostLimits;
  maxMessageBytes: number;
  security: SecuritySettings;
}

/** Authentication, tenant limits and TLS (services/security). Files are read at start. */
export interface SecuritySettings {
  /** Static bearer tokens and per-tenant limit overrides (services/security/tenants-file.ts). */
  tenantsFile: string | undefined;
  /** How often the tenants file and JWT key are checked for changes (a changed file applies without a restart). */
  tenantsRefreshMs: number;
  jwt: { publicKeyFile: string; issuer: string; audience: string; tenantClaim: string } | undefined;
  /** File holding the secret workers sign forwarded calls with. */
  peerSecretFile: string | undefined;
  /** Limits every tenant gets unless the tenants file overrides them (0 = none). */
  tenantLimits: TenantLimits;
  /** Whole-worker request rate and open streams (0 = none). */
  globalLimits: GlobalLimits;
  grpcTls: { certFile: string; keyFile: string; clientCaFile: string | undefined; caFile: string | undefined; refreshMs: number } | undefined;
  /** CA of the Kafka brokers' certificates (with --kafka-ssl true); absent = the system's roots. */
  kafkaTlsCa: string | undefined;
  /** Client certificate and key for brokers that require one (mutual TLS). */
  kafkaTlsCert: string | undefined;
  kafkaTlsKey: string | undefined;
  /** Redis ACL user and TLS beyond what the URL says (rediss:// turns TLS on). */
  redis: { username: string | undefined; password: string | undefined; caFile: string | undefined; certFile: string | undefined; keyFile: string | undefined };
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
  readonly code = "E_CONFIG";
}

interface Setting {
  flag: string;
  env: string;
  help: string;
  fallback?: string;
}

const SETTINGS = {
  model: { flag: "model", env: "STREAMSINK_MODEL", help: "model directory (config.json, *.safetensors, tokenizer.json)" },
  backend: { flag: "backend", env: "STREAMSINK_BACKEND", help: "cpu | cuda | auto", fallback: "auto" },
  dtype: {
    flag: "dtype",
    env: "STREAMSINK_DTYPE",
    help: "CUDA weights and caches: bf16 | fp16 | fp32 | auto (bf16; fp16 for fp16 checkpoints)",
    fallback: "auto",
  },
  threads: { flag: "threads", env: "STREAMSINK_THREADS", help: "CPU backend threads (0 = all cores)", fallback: "0" },
  grpcHost: { flag: "grpc-host", env: "STREAMSINK_GRPC_HOST", help: "gRPC listen address", fallback: "0.0.0.0" },
  grpcPort: { flag: "grpc-port", env: "STREAMSINK_GRPC_PORT", help: "gRPC port (0 = any free port)", fallback: "50051" },
  advertise: { flag: "advertise-address", env: "STREAMSINK_ADVERTISE_ADDRESS", help: "host:port other workers use to reach this one" },
  metricsPort: { flag: "metrics-port", env: "STREAMSINK_METRICS_PORT", help: "Prometheus /metrics port (0 = off)", fallback: "9464" },
  policy: { flag: "policy", env: "STREAMSINK_POLICY", help: "default cache policy: sinks | window | recompute | dense", fallback: "sinks" },
  sinks: { flag: "sinks", env: "STREAMSINK_SINKS", help: "default attention sinks S", fallback: "4" },
  window: { flag: "window", env: "STREAMSINK_WINDOW", help: "default window W (S+W is the cache size)", fallback: "1020" },
  kafkaBrokers: { flag: "kafka-brokers", env: "STREAMSINK_KAFKA_BROKERS", help: "comma-separated host:port list (unset = in-process log)" },
  kafkaInput: { flag: "kafka-input-topic", env: "STREAMSINK_KAFKA_INPUT_TOPIC", help: "input topic", fallback: "streamsink.input" },
  kafkaOutput: { flag: "kafka-output-topic", env: "STREAMSINK_KAFKA_OUTPUT_TOPIC", help: "output topic", fallback: "streamsink.output" },
  kafkaDlq: { flag: "kafka-dead-letter-topic", env: "STREAMSINK_KAFKA_DEAD_LETTER_TOPIC", help: "dead-letter topic", fallback: "streamsink.dead-letter" },
  kafkaGroup: { flag: "kafka-group", env: "STREAMSINK_KAFKA_GROUP", help: "consumer group id", fallback: "streamsink-workers" },
  kafkaPartitions: { flag: "kafka-partitions", env: "STREAMSINK_KAFKA_PARTITIONS", help: "partitions when creating the input topic", fallback: "12" },
  ...KAFKA_SECURITY_SETTINGS,
  redisUrl: { flag: "redis-url", env: "STREAMSINK_REDIS_URL", help: "redis://host:port (unset = local snapshot directory)" },
  snapshotDir: { flag: "snapshot-dir", env: "STREAMSINK_SNAPSHOT_DIR", help: "local snapshot directory (no Redis)", fallback: ".streamsink/snapshots" },
  snapshotInterval: { flag: "snapshot-interval-ms", env: "STREAMSINK_SNAPSHOT_INTERVAL_MS", help: "snapshot (and offset commit) cadence", fallback: "2000" },
  snapshotEveryTokens: { flag: "snapshot-every-tokens", env: "STREAMSINK_SNAPSHOT_EVERY_TOKENS", help: "also snapshot a session after this many tokens (0 = time only)", fallback: "512" },
  snapshotTtl: { flag: "snapshot-ttl-seconds", env: "STREAMSINK_SNAPSHOT_TTL_SECONDS", help: "idle sessions' snapshots expire after this", fallback: String(7 * 24 * 3600) },
  maxSessions: { flag: "max-sessions", env: "STREAMSINK_MAX_SESSIONS", help: "sessions per worker", fallback: String(DEFAULT_LIMITS.maxSessions) },
  maxBatchTokens: { flag: "max-batch-tokens", env: "STREAMSINK_MAX_BATCH_TOKENS", help: "tokens per engine step", fallback: String(DEFAULT_LIMITS.maxBatchTokens) },
  maxNewTokens: { flag: "max-new-tokens", env: "STREAMSINK_MAX_NEW_TOKENS", help: "largest max_new_tokens accepted", fallback: String(DEFAULT_LIMITS.maxNewTokens) },
  maxInputTokens: { flag: "max-input-tokens", env: "STREAMSINK_MAX_INPUT_TOKENS", help: "largest append or prompt", fallback: String(DEFAULT_LIMITS.maxInputTokens) },
  maxMessageBytes: { flag: "max-message-bytes", env: "STREAMSINK_MAX_MESSAGE_BYTES", help: "largest gRPC message or Kafka record", fallback: String(4 << 20) },
  tenantsFile: { flag: "tenants-file", env: "STREAMSINK_TENANTS_FILE", help: "JSON: bearer tokens -> tenants, per-tenant limits (set = authentication on)" },
  tenantsRefresh: { flag: "tenants-refresh-ms", env: "STREAMSINK_TENANTS_REFRESH_MS", help: "how often the tenants file and JWT key are checked for changes", fallback: "5000" },
  jwtPublicKey: { flag: "jwt-public-key-file", env: "STREAMSINK_JWT_PUBLIC_KEY_FILE", help: "PEM public key (RSA: RS256, P-256: ES256) for JWT bearer tokens" },
  jwtIssuer: { flag: "jwt-issuer", env: "STREAMSINK_JWT_ISSUER", help: "required JWT iss" },
  jwtAudience: { flag: "jwt-audience", env: "STREAMSINK_JWT_AUDIENCE", help: "required JWT aud" },
  jwtTenantClaim: { flag: "jwt-tenant-claim", env: "STREAMSINK_JWT_TENANT_CLAIM", help: "JWT claim naming the tenant", fallback: "tenant" },
  peerSecretFile: { flag: "peer-secret-file", env: "STREAMSINK_PEER_SECRET_FILE", help: "secret shared by workers to sign forwarded calls (required with auth and Kafka)" },
  tenantMaxSessions: { flag: "tenant-max-sessions", env: "STREAMSINK_TENANT_MAX_SESSIONS", help: "sessions per tenant per worker (0 = no limit)", fallback: "0" },
  tenantMaxInputTokens: { flag: "tenant-max-input-tokens", env: "STREAMSINK_TENANT_MAX_INPUT_TOKENS", help: "tokens per append or prompt per tenant (0 = no limit)", fallback: "0" },
  tenantMaxNewTokens: { flag: "tenant-max-new-tokens", env: "STREAMSINK_TENANT_MAX_NEW_TOKENS", help: "max_new_tokens per tenant (0 = no limit)", fallback: "0" },
  tenantRps: { flag: "tenant-requests-per-second", env: "STREAMSINK_TENANT_REQUESTS_PER_SECOND", help: "requests per second per tenant per worker (0 = no limit)", fallback: "0" },
  tenantBurst: { flag: "tenant-burst", env: "STREAMSINK_TENANT_BURST", help: "requests above the rate a tenant may send at once (0 = the rate)", fallback: "0" },
  tenantMaxStreams: { flag: "tenant-max-streams", env: "STREAMSINK_TENANT_MAX_STREAMS", help: "Generate/Stream calls open per tenant per worker (0 = no limit)", fallback: "0" },
  maxRps: { flag: "max-requests-per-second", env: "STREAMSINK_MAX_REQUESTS_PER_SECOND", help: "requests per second per worker (0 = no limit)", fallback: "0" },
  maxStreams: { flag: "max-streams", env: "STREAMSINK_MAX_STREAMS", help: "Generate/Stream calls open per worker (0 = no limit)", fallback: "0" },
  grpcTlsCert: { flag: "grpc-tls-cert", env: "STREAMSINK_GRPC_TLS_CERT", help: "PEM certificate chain: serve gRPC over TLS (re-read while running)" },
  grpcTlsKey: { flag: "grpc-tls-key", env: "STREAMSINK_GRPC_TLS_KEY", help: "PEM private key of --grpc-tls-cert" },
  grpcTlsClientCa: { flag: "grpc-tls-client-ca", env: "STREAMSINK_GRPC_TLS_CLIENT_CA", help: "CA for client certificates: require mutual TLS" },
  grpcTlsCa: { flag: "grpc-tls-ca", env: "STREAMSINK_GRPC_TLS_CA", help: "CA other workers' certificates are checked against when forwarding (default: --grpc-tls-client-ca)" },
  redisUsername: { flag: "redis-username", env: "STREAMSINK_REDIS_USERNAME", help: "Redis ACL user (password from STREAMSINK_REDIS_PASSWORD)" },
  redisTlsCa: { flag: "redis-tls-ca", env: "STREAMSINK_REDIS_TLS_CA", help: "CA of the Redis server certificate (rediss:// URLs)" },
  redisTlsCert: { flag: "redis-tls-cert", env: "STREAMSINK_REDIS_TLS_CERT", help: "client certificate for Redis servers that require one" },
  redisTlsKey: { flag: "redis-tls-key", env: "STREAMSINK_REDIS_TLS_KEY", help: "key of --redis-tls-cert" },
  grpcTlsRefresh: { flag: "grpc-tls-refresh-ms", env: "STREAMSINK_GRPC_TLS_REFRESH_MS", help: "how often certificate files are re-read", fallback: "10000" },
} satisfies Record<string, Setting>;

export function serveUsage(): string {
  const lines = Object.values(SETTINGS).map(
    (s: Setting) => `  --${s.flag.padEnd(24)} ${s.env.padEnd(34)} ${s.help}${s.fallback !== undefined ? ` (default ${s.fallback})` : ""}`,
  );
  return `usage: streamsink serve [options]\n\n  flag                       env                                what\n${lines.join("\n")}`;
}

/** The bundled default model: the trained streamsink-llama-7m (models/), trained by tools/train. */
export const BUNDLED_MODEL = "streamsink-llama-7m";

export function bundledModelDir(): string {
  const dir = join(packageRoot(), "models", BUNDLED_MODEL);
  if (!existsSync(join(dir, "config.json"))) throw new ConfigError(`no --model given and the bundled model (models/${BUNDLED_MODEL}) is missing`);
  return dir;
}

export function loadWorkerConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const options: Record<string, { type: "string" }> = {};
  for (const s of Object.values(SETTINGS)) options[s.flag] = { type: "string" };
  let values: Record<string, string | undefined>;
  try {
    values = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as Record<string, string | undefined>;
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const raw = (s: Setting): string | undefined => values[s.flag] ?? (env[s.env] !== undefined && env[s.env] !== "" ? env[s.env] : undefined) ?? s.fallback;
  const name = (s: Setting) => `--${s.flag} / ${s.env}`;
  const int = (s: Setting, min: number, max: number): number => {
    const v = raw(s)!;
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new ConfigError(`${name(s)} must be an integer from ${min} to ${max}, got "${v}"`);
    return Number(v);
  };
  const choice = <T extends string>(s: Setting, allowed: readonly T[]): T => {
    const v = raw(s)!;
    if (!allowed.includes(v as T)) throw new ConfigError(`${name(s)} must be one of ${allowed.join(", ")}, got "${v}"`);
    return v as T;
  };
  const topic = (s: Setting): string => {
    const v = raw(s)!;
    if (!/^[A-Za-z0-9._-]{1,249}$/.test(v)) throw new ConfigError(`${name(s)} is not a valid Kafka topic name: "${v}"`);
    return v;
  };

  const modelRaw = raw(SETTINGS.model);
  const model = modelRaw ? resolve(modelRaw) : bundledModelDir();
  if (!existsSync(join(model, "config.json"))) throw new ConfigError(`${name(SETTINGS.model)}: ${model} is not a model directory (no config.json)`);

  const brokersRaw = raw(SETTINGS.kafkaBrokers);
  const kafkaBrokers = brokersRaw ? brokersRaw.split(",").map((b) => b.trim()).filter(Boolean) : [];
  for (const b of kafkaBrokers)
    if (!/^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/.test(b)) throw new ConfigError(`${name(SETTINGS.kafkaBrokers)}: "${b}" is not host:port`);

  const redisUrl = raw(SETTINGS.redisUrl);
  if (redisUrl !== undefined) {
    let u: URL;
    try {
      u = new URL(redisUrl);
    } catch {
      throw new ConfigError(`${name(SETTINGS.redisUrl)}: "${redisUrl}" is not a URL`);
    }
    if (u.protocol !== "redis:" && u.protocol !== "rediss:") throw new ConfigError(`${name(SETTINGS.redisUrl)} must start with redis:// or rediss://`);
  }

  const grpcHost = raw(SETTINGS.grpcHost)!;
  const grpcPort = int(SETTINGS.grpcPort, 0, 65535);
  const policy = choice(SETTINGS.policy, ["sinks", "window", "recompute", "dense"] as const);
  const sinks = int(SETTINGS.sinks, 0, 1024);
  const window = int(SETTINGS.window, 1, 1 << 20);
  const limits: HostLimits = {
    ...DEFAULT_LIMITS,
    maxSessions: int(SETTINGS.maxSessions, 1, 1 << 20),
    maxBatchTokens: int(SETTINGS.maxBatchTokens, 1, 1 << 16),
    maxNewTokens: int(SETTINGS.maxNewTokens, 1, 1 << 20),
    maxInputTokens: int(SETTINGS.maxInputTokens, 1, 1 << 22),
  };
  const advertise = raw(SETTINGS.advertise);
  if (advertise !== undefined && !/^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/.test(advertise))
    throw new ConfigError(`${name(SETTINGS.advertise)}: "${advertise}" is not host:port`);

  const kafkaSecurity = parseKafkaClientSecurity(raw, env, (message) => new ConfigError(message));

  const file = (s: Setting): string | undefined => {
    const v = raw(s);
    if (v === undefined) return undefined;
    const path = resolve(v);
    if (!existsSync(path)) throw new ConfigError(`${name(s)}: ${path} does not exist`);
    return path;
  };
  const jwtKey = file(SETTINGS.jwtPublicKey);
  let jwt: SecuritySettings["jwt"];
  if (jwtKey !== undefined) {
    const issuer = raw(SETTINGS.jwtIssuer);
    const audience = raw(SETTINGS.jwtAudience);
    if (!issuer || !audience) throw new ConfigError(`JWT bearer tokens need ${name(SETTINGS.jwtIssuer)} and ${name(SETTINGS.jwtAudience)}`);
    jwt = { publicKeyFile: jwtKey, issuer, audience, tenantClaim: raw(SETTINGS.jwtTenantClaim)! };
  }
  const tenantsFile = file(SETTINGS.tenantsFile);
  const peerSecretFile = file(SETTINGS.peerSecretFile);
  if ((tenantsFile !== undefined || jwt !== undefined) && kafkaBrokers.length > 0 && peerSecretFile === undefined)
    throw new ConfigError(`authentication with Kafka (several workers) needs ${name(SETTINGS.peerSecretFile)}: forwarded calls must prove which tenant they carry`);
  const certFile = file(SETTINGS.grpcTlsCert);
  const keyFile = file(SETTINGS.grpcTlsKey);
  if ((certFile === undefined) !== (keyFile === undefined)) throw new ConfigError(`${name(SETTINGS.grpcTlsCert)} and ${name(SETTINGS.grpcTlsKey)} go together`);
  const clientCaFile = file(SETTINGS.grpcTlsClientCa);
  const caFile = file(SETTINGS.grpcTlsCa) ?? clientCaFile;
  if (certFile === undefined && (clientCaFile !== undefined || raw(SETTINGS.grpcTlsCa) !== undefined))
    throw new ConfigError(`${name(SETTINGS.grpcTlsClientCa)} and ${name(SETTINGS.grpcTlsCa)} need ${name(SETTINGS.grpcTlsCert)}`);
  const redisCertFile = file(SETTINGS.redisTlsCert);
  const redisKeyFile = file(SETTINGS.redisTlsKey);
  if ((redisCertFile === undefined) !== (redisKeyFile === undefined)) throw new ConfigError(`${name(SETTINGS.redisTlsCert)} and ${name(SETTINGS.redisTlsKey)} go together`);
  const redisTlsCa = file(SETTINGS.redisTlsCa);
  if ((redisTlsCa !== undefined || redisCertFile !== undefined) && !redisUrl?.startsWith("rediss://"))
    throw new ConfigError(`Redis TLS settings need a rediss:// URL in ${name(SETTINGS.redisUrl)}`);
  const security: SecuritySettings = {
    kafkaTlsCa: kafkaSecurity.kafkaTlsCa,
    kafkaTlsCert: kafkaSecurity.kafkaTlsCert,
    kafkaTlsKey: kafkaSecurity.kafkaTlsKey,
    redis: {
      username: raw(SETTINGS.redisUsername),
      password: env.STREAMSINK_REDIS_PASSWORD !== undefined && env.STREAMSINK_REDIS_PASSWORD !== "" ? env.STREAMSINK_REDIS_PASSWORD : undefined,
      caFile: redisTlsCa,
      certFile: redisCertFile,
      keyFile: redisKeyFile,
    },
    tenantsFile,
    tenantsRefreshMs: int(SETTINGS.tenantsRefresh, 100, 3_600_000),
    jwt,
    peerSecretFile,
    tenantLimits: {
      maxSessions: int(SETTINGS.tenantMaxSessions, 0, 1 << 20),
      maxInputTokens: int(SETTINGS.tenantMaxInputTokens, 0, 1 << 22),
      maxNewTokens: int(SETTINGS.tenantMaxNewTokens, 0, 1 << 20),
      requestsPerSecond: int(SETTINGS.tenantRps, 0, 1 << 20),
      burst: int(SETTINGS.tenantBurst, 0, 1 << 20),
      maxConcurrentStreams: int(SETTINGS.tenantMaxStreams, 0, 1 << 20),
    },
    globalLimits: { requestsPerSecond: int(SETTINGS.maxRps, 0, 1 << 24), burst: 0, maxConcurrentStreams: int(SETTINGS.maxStreams, 0, 1 << 20) },
    grpcTls:
      certFile !== undefined && keyFile !== undefined
        ? { certFile, keyFile, clientCaFile, caFile, refreshMs: int(SETTINGS.grpcTlsRefresh, 100, 3_600_000) }
        : undefined,
  };

  return {
    security,
    model,
    backend: choice(SETTINGS.backend, ["cpu", "cuda", "auto"] as const),
    ...(() => {
      const d = choice(SETTINGS.dtype, ["bf16", "fp16", "fp32", "auto"] as const);
      return d === "auto" ? {} : { dtype: d };
    })(),
    threads: int(SETTINGS.threads, 0, 1024),
    grpcHost,
    grpcPort,
    advertiseAddress: advertise ?? `${grpcHost === "0.0.0.0" || grpcHost === "::" ? "127.0.0.1" : grpcHost}:${grpcPort}`,
    metricsPort: int(SETTINGS.metricsPort, 0, 65535),
    policy,
    sinks,
    window,
    kafkaBrokers,
    kafkaInputTopic: topic(SETTINGS.kafkaInput),
    kafkaOutputTopic: topic(SETTINGS.kafkaOutput),
    kafkaDeadLetterTopic: topic(SETTINGS.kafkaDlq),
    kafkaGroup: raw(SETTINGS.kafkaGroup)!,
    kafkaPartitions: int(SETTINGS.kafkaPartitions, 1, 10000),
    kafkaSsl: kafkaSecurity.ssl,
    kafkaSasl: kafkaSecurity.sasl,
    redisUrl,
    snapshotDir: resolve(raw(SETTINGS.snapshotDir)!),
    snapshotIntervalMs: int(SETTINGS.snapshotInterval, 100, 3_600_000),
    snapshotEveryTokens: int(SETTINGS.snapshotEveryTokens, 0, 1 << 30),
    snapshotTtlSeconds: int(SETTINGS.snapshotTtl, 60, 365 * 24 * 3600),
    limits,
    maxMessageBytes: int(SETTINGS.maxMessageBytes, 1024, 1 << 30),
  };
}
