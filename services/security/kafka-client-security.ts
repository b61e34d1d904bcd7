/**
 * How a Kafka client of ours (worker, metrics sidecar, CLI) secures its
 * connection: TLS with an optional CA and client certificate, and SASL. One
 * set of flags and STREAMSINK_* names, parsed and checked in one place, so a
 * ConfigMap that feeds the worker feeds the sidecar the same way. The SASL
 * password comes from STREAMSINK_KAFKA_SASL_PASSWORD only (a flag would show
 * in `ps`).
 *
 * Depends on node: modules only: the sidecar image ships this file beside its
 * own and nothing else of the worker.
 */
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";

import type { SASLOptions } from "kafkajs";

export interface KafkaSecuritySetting {
  flag: string;
  env: string;
  help: string;
  fallback?: string;
}

export const KAFKA_SECURITY_SETTINGS = {
  kafkaSsl: { flag: "kafka-ssl", env: "STREAMSINK_KAFKA_SSL", help: "TLS to the brokers: true | false", fallback: "false" },
  kafkaSaslMechanism: {
    flag: "kafka-sasl-mechanism",
    env: "STREAMSINK_KAFKA_SASL_MECHANISM",
    help: "plain | scram-sha-256 | scram-sha-512 (unset = no SASL; password from STREAMSINK_KAFKA_SASL_PASSWORD)",
  },
  kafkaSaslUsername: { flag: "kafka-sasl-username", env: "STREAMSINK_KAFKA_SASL_USERNAME", help: "SASL user name" },
  kafkaTlsCa: { flag: "kafka-tls-ca", env: "STREAMSINK_KAFKA_TLS_CA", help: "CA of the brokers' certificates (with --kafka-ssl true)" },
  kafkaTlsCert: { flag: "kafka-tls-cert", env: "STREAMSINK_KAFKA_TLS_CERT", help: "client certificate for brokers that require one (with --kafka-ssl true)" },
  kafkaTlsKey: { flag: "kafka-tls-key", env: "STREAMSINK_KAFKA_TLS_KEY", help: "key of --kafka-tls-cert" },
} satisfies Record<string, KafkaSecuritySetting>;

export const KAFKA_SASL_PASSWORD_ENV = "STREAMSINK_KAFKA_SASL_PASSWORD";

export interface KafkaSasl {
  mechanism: "plain" | "scram-sha-256" | "scram-sha-512";
  username: string;
  password: string;
}

/** Files are absolute paths that existed when the settings were read. */
export interface KafkaClientSecurity {
  ssl: boolean;
  sasl: KafkaSasl | undefined;
  kafkaTlsCa: string | undefined;
  kafkaTlsCert: string | undefined;
  kafkaTlsKey: string | undefined;
}

/**
 * Reads and checks the settings. `raw` gives a setting's value (flag, env
 * twin or fallback, as the caller's own settings do); `fail` makes the
 * caller's configuration error from a message that names the setting.
 */
export function parseKafkaClientSecurity(
  raw: (s: KafkaSecuritySetting) => string | undefined,
  env: NodeJS.ProcessEnv,
  fail: (message: string) => Error,
): KafkaClientSecurity {
  const S = KAFKA_SECURITY_SETTINGS;
  const name = (s: KafkaSecuritySetting) => `--${s.flag} / ${s.env}`;
  const sslRaw = raw(S.kafkaSsl) ?? "false";
  if (sslRaw !== "true" && sslRaw !== "false") throw fail(`${name(S.kafkaSsl)} must be true or false, got "${sslRaw}"`);
  const ssl = sslRaw === "true";

  let sasl: KafkaSasl | undefined;
  const mechanism = raw(S.kafkaSaslMechanism);
  if (mechanism !== undefined) {
    const allowed = ["plain", "scram-sha-256", "scram-sha-512"] as const;
    if (!allowed.includes(mechanism as KafkaSasl["mechanism"]))
      throw fail(`${name(S.kafkaSaslMechanism)} must be one of ${allowed.join(", ")}, got "${mechanism}"`);
    const username = raw(S.kafkaSaslUsername);
    const password = env[KAFKA_SASL_PASSWORD_ENV];
    if (!username || !password) throw fail(`SASL (${mechanism}) needs ${name(S.kafkaSaslUsername)} and ${KAFKA_SASL_PASSWORD_ENV}`);
    sasl = { mechanism: mechanism as KafkaSasl["mechanism"], username, password };
  }

  const file = (s: KafkaSecuritySetting): string | undefined => {
    const v = raw(s);
    if (v === undefined) return undefined;
    const path = resolve(v);
    if (!existsSync(path)) throw fail(`${name(s)}: ${path} does not exist`);
    return path;
  };
  const kafkaTlsCa = file(S.kafkaTlsCa);
  if (kafkaTlsCa !== undefined && !ssl) throw fail(`${name(S.kafkaTlsCa)} needs ${name(S.kafkaSsl)} true`);
  const kafkaTlsCert = file(S.kafkaTlsCert);
  const kafkaTlsKey = file(S.kafkaTlsKey);
  if ((kafkaTlsCert === undefined) !== (kafkaTlsKey === undefined)) throw fail(`${name(S.kafkaTlsCert)} and ${name(S.kafkaTlsKey)} go together`);
  if (kafkaTlsCert !== undefined && !ssl) throw fail(`${name(S.kafkaTlsCert)} needs ${name(S.kafkaSsl)} true`);
  return { ssl, sasl, kafkaTlsCa, kafkaTlsCert, kafkaTlsKey };
}

/** kafkajs `ssl`: true (system roots) or the CA and client certificate files, read now. */
export function kafkaTlsOptions(
  ssl: boolean,
  settings: { kafkaTlsCa?: string | undefined; kafkaTlsCert?: string | undefined; kafkaTlsKey?: string | undefined },
): boolean | { ca?: Buffer[]; cert?: Buffer; key?: Buffer } {
  if (!ssl || (!settings.kafkaTlsCa && !settings.kafkaTlsCert)) return ssl;
  return {
    ...(settings.kafkaTlsCa ? { ca: [readFileSync(settings.kafkaTlsCa)] } : {}),
    ...(settings.kafkaTlsCert && settings.kafkaTlsKey ? { cert: readFileSync(settings.kafkaTlsCert), key: readFileSync(settings.kafkaTlsKey) } : {}),
  };
}

/** The kafkajs client options for a KafkaClientSecurity: `ssl` and, with SASL, `sasl`. */
export interface KafkaClientOptions {
  ssl: boolean | { ca?: Buffer[]; cert?: Buffer; key?: Buffer };
  sasl?: SASLOptions;
}

export function kafkaClientOptions(security: KafkaClientSecurity): KafkaClientOptions {
  return { ssl: kafkaTlsOptions(security.ssl, security), ...(security.sasl ? { sasl: security.sasl as SASLOptions } : {}) };
}
