/**
 * Metrics sidecar configuration from flags and environment variables (a flag
 * wins over its env twin). The Kafka settings share their env names with the
 * worker's, so one ConfigMap and one Secret feed both containers of a pod.
 */
import { parseArgs } from "node:util";

import { KAFKA_SASL_PASSWORD_ENV, KAFKA_SECURITY_SETTINGS, type KafkaSasl, parseKafkaClientSecurity } from "../security/kafka-client-security.js";

export interface KafkaLagConfig {
  brokers: string[];
  group: string;
  topic: string;
  intervalMs: number;
  ssl: boolean;
  sasl: KafkaSasl | undefined;
  /** CA of the brokers' certificates; absent = the system's roots. */
  kafkaTlsCa?: string;
  /** Client certificate and key for brokers that require one (mutual TLS). */
  kafkaTlsCert?: string;
  kafkaTlsKey?: string;
}

export interface SidecarConfig {
  host: string;
  port: number;
  /** URL of the worker's Prometheus endpoint. */
  workerMetricsUrl: string;
  workerTimeoutMs: number;
  /** nvidia-smi binary; undefined when GPU metrics are turned off. */
  nvidiaSmi: string | undefined;
  gpuTimeoutMs: number;
  /** Consumer-group lag from the Kafka admin API; undefined without brokers. */
  kafka: KafkaLagConfig | undefined;
}

export class SidecarConfigError extends Error {
  override readonly name = "SidecarConfigError";
  readonly code = "E_CONFIG";
}

interface Setting {
  flag?: string;
  env: string;
  help: string;
  fallback?: string;
}

const SETTINGS = {
  host: { flag: "host", env: "STREAMSINK_SIDECAR_HOST", help: "listen address", fallback: "0.0.0.0" },
  port: { flag: "port", env: "STREAMSINK_SIDECAR_PORT", help: "port of /metrics and /healthz (0 = any free port)", fallback: "9465" },
  workerMetrics: {
    flag: "worker-metrics",
    env: "STREAMSINK_SIDECAR_WORKER_METRICS",
    help: "the worker's metrics URL",
    fallback: "http://127.0.0.1:9464/metrics",
  },
  workerTimeout: { flag: "worker-timeout-ms", env: "STREAMSINK_SIDECAR_WORKER_TIMEOUT_MS", help: "worker scrape timeout", fallback: "2000" },
  nvidiaSmi: {
    flag: "nvidia-smi",
    env: "STREAMSINK_SIDECAR_NVIDIA_SMI",
    help: 'nvidia-smi binary for GPU metrics ("off" = none; missing binary = no GPU metrics)',
    fallback: "nvidia-smi",
  },
  gpuTimeout: { flag: "gpu-timeout-ms", env: "STREAMSINK_SIDECAR_GPU_TIMEOUT_MS", help: "nvidia-smi timeout", fallback: "5000" },
  kafkaBrokers: { flag: "kafka-brokers", env: "STREAMSINK_KAFKA_BROKERS", help: "comma-separated host:port list (unset = no lag metrics)" },
  kafkaGroup: { flag: "kafka-group", env: "STREAMSINK_KAFKA_GROUP", help: "the workers' consumer group", fallback: "streamsink-workers" },
  kafkaTopic: { flag: "kafka-topic", env: "STREAMSINK_KAFKA_INPUT_TOPIC", help: "the workers' input topic", fallback: "streamsink.input" },
  kafkaInterval: { flag: "kafka-interval-ms", env: "STREAMSINK_SIDECAR_KAFKA_INTERVAL_MS", help: "how often lag is read", fallback: "10000" },
  ...KAFKA_SECURITY_SETTINGS,
  saslPassword: { env: KAFKA_SASL_PASSWORD_ENV, help: "SASL password (environment only)" },
} satisfies Record<string, Setting>;

export function sidecarUsage(): string {
  const lines = Object.values(SETTINGS).map((s: Setting) => {
    const flag = s.flag ? `--${s.flag}` : "";
    return `  ${flag.padEnd(26)} ${s.env.padEnd(38)} ${s.help}${s.fallback !== undefined ? ` (default ${s.fallback})` : ""}`;
  });
  return `usage: node dist/services/metrics-sidecar/main.js [options]\n\n  flag                       env                                    what\n${lines.join("\n")}`;
}

const HOST_PORT = /^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/;

export function loadSidecarConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): SidecarConfig {
  const options: Record<string, { type: "string" }> = {};
  for (const s of Object.values(SETTINGS) as Setting[]) if (s.flag) options[s.flag] = { type: "string" };
  let values: Record<string, string | undefined>;
  try {
    values = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as Record<string, string | undefined>;
  } catch (err) {
    throw new SidecarConfigError((err as Error).message);
  }
  const raw = (s: Setting): string | undefined =>
    (s.flag ? values[s.flag] : undefined) ?? (env[s.env] !== undefined && env[s.env] !== "" ? env[s.env] : undefined) ?? s.fallback;
  const name = (s: Setting) => (s.flag ? `--${s.flag} / ${s.env}` : s.env);
  const int = (s: Setting, min: number, max: number): number => {
    const v = raw(s)!;
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new SidecarConfigError(`${name(s)} must be an integer from ${min} to ${max}, got "${v}"`);
    return Number(v);
  };

  const workerMetricsUrl = raw(SETTINGS.workerMetrics)!;
  let url: URL;
  try {
    url = new URL(workerMetricsUrl);
  } catch {
    throw new SidecarConfigError(`${name(SETTINGS.workerMetrics)}: "${workerMetricsUrl}" is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new SidecarConfigError(`${name(SETTINGS.workerMetrics)} must be an http(s) URL`);

  const smi = raw(SETTINGS.nvidiaSmi)!;

  let kafka: KafkaLagConfig | undefined;
  const brokersRaw = raw(SETTINGS.kafkaBrokers);
  const brokers = brokersRaw ? brokersRaw.split(",").map((b) => b.trim()).filter(Boolean) : [];
  for (const b of brokers) if (!HOST_PORT.test(b)) throw new SidecarConfigError(`${name(SETTINGS.kafkaBrokers)}: "${b}" is not host:port`);
  if (brokers.length > 0) {
    const topic = raw(SETTINGS.kafkaTopic)!;
    if (!/^[A-Za-z0-9._-]{1,249}$/.test(topic)) throw new SidecarConfigError(`${name(SETTINGS.kafkaTopic)} is not a valid Kafka topic name: "${topic}"`);
    const security = parseKafkaClientSecurity(raw, env, (message) => new SidecarConfigError(message));
    kafka = {
      brokers,
      group: raw(SETTINGS.kafkaGroup)!,
      topic,
      intervalMs: int(SETTINGS.kafkaInterval, 100, 3_600_000),
      ssl: security.ssl,
      sasl: security.sasl,
      ...(security.kafkaTlsCa ? { kafkaTlsCa: security.kafkaTlsCa } : {}),
      ...(security.kafkaTlsCert && security.kafkaTlsKey ? { kafkaTlsCert: security.kafkaTlsCert, kafkaTlsKey: security.kafkaTlsKey } : {}),
    };
  }

  return {
    host: raw(SETTINGS.host)!,
    port: int(SETTINGS.port, 0, 65535),
    workerMetricsUrl,
    workerTimeoutMs: int(SETTINGS.workerTimeout, 1, 600_000),
    nvidiaSmi: smi === "off" ? undefined : smi,
    gpuTimeoutMs: int(SETTINGS.gpuTimeout, 1, 600_000),
    kafka,
  };
}
