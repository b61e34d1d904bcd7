/**
 * The Kafka security flags of the CLI's Kafka paths (`feed --kafka-brokers`,
 * `load --kafka-sessions`): the worker's own settings and checks
 * (services/security/kafka-client-security.ts), env twins included; the SASL
 * password only from STREAMSINK_KAFKA_SASL_PASSWORD.
 */
import {
  KAFKA_SECURITY_SETTINGS,
  type KafkaClientOptions,
  kafkaClientOptions,
  type KafkaSecuritySetting,
  parseKafkaClientSecurity,
} from "../security/kafka-client-security.js";
import { UsageError } from "./usage-error.js";

/** parseArgs options for the flags. */
export const KAFKA_SECURITY_FLAGS = {
  "kafka-ssl": { type: "string" },
  "kafka-tls-ca": { type: "string" },
  "kafka-tls-cert": { type: "string" },
  "kafka-tls-key": { type: "string" },
  "kafka-sasl-mechanism": { type: "string" },
  "kafka-sasl-username": { type: "string" },
} as const satisfies Record<(typeof KAFKA_SECURITY_SETTINGS)[keyof typeof KAFKA_SECURITY_SETTINGS]["flag"], { type: "string" }>;

export const KAFKA_SECURITY_USAGE = `[--kafka-ssl true [--kafka-tls-ca F] [--kafka-tls-cert F --kafka-tls-key F]]
         [--kafka-sasl-mechanism plain|scram-sha-256|scram-sha-512 --kafka-sasl-username U (password from STREAMSINK_KAFKA_SASL_PASSWORD)]`;

/** kafkajs `ssl`/`sasl` options from the parsed flags (or their STREAMSINK_* twins). */
export function kafkaSecurityFromFlags(
  values: Partial<Record<keyof typeof KAFKA_SECURITY_FLAGS, string | undefined>>,
  env: NodeJS.ProcessEnv = process.env,
): KafkaClientOptions {
  const raw = (s: KafkaSecuritySetting): string | undefined =>
    values[s.flag as keyof typeof KAFKA_SECURITY_FLAGS] ?? (env[s.env] !== undefined && env[s.env] !== "" ? env[s.env] : undefined) ?? s.fallback;
  return kafkaClientOptions(parseKafkaClientSecurity(raw, env, (message) => new UsageError(message)));
}
