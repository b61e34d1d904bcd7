#!/usr/bin/env node
/**
 * The metrics sidecar process: `node dist/services/metrics-sidecar/main.js
 * --worker-metrics http://127.0.0.1:9464/metrics --port 9465
 * [--kafka-brokers ... --kafka-group ... --kafka-topic ... --kafka-ssl true
 * --kafka-tls-ca ...]`. Runs until
 * SIGTERM/SIGINT; prints the bound port in its first log line.
 */
import { createLogger } from "../worker/logger.js";
import { MetricsSidecar } from "./metrics-sidecar.js";
import { loadSidecarConfig, SidecarConfigError, sidecarUsage } from "./sidecar-config.js";

async function main(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(`${sidecarUsage()}\n`);
    return 0;
  }
  const log = createLogger().child({ component: "metrics-sidecar" });
  let sidecar: MetricsSidecar;
  try {
    sidecar = new MetricsSidecar(loadSidecarConfig(argv), log);
  } catch (err) {
    if (err instanceof SidecarConfigError) {
      process.stderr.write(`metrics-sidecar: ${err.message}\n\n${sidecarUsage()}\n`);
      return 2;
    }
    throw err;
  }
  const port = await sidecar.start();
  const c = sidecar.config;
  log.info("metrics sidecar serving", {
    address: `${c.host}:${port}`,
    port,
    worker: c.workerMetricsUrl,
    gpu: c.nvidiaSmi ?? "off",
    kafka: c.kafka
      ? {
          brokers: c.kafka.brokers,
          group: c.kafka.group,
          topic: c.kafka.topic,
          tls: c.kafka.ssl ? { ca: c.kafka.kafkaTlsCa ?? "system", clientCert: c.kafka.kafkaTlsCert ?? null } : false,
          sasl: c.kafka.sasl?.mechanism ?? null,
        }
      : null,
  });
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      log.info("signal received; stopping", { signal });
      resolve();
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
  });
  await sidecar.stop();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`metrics-sidecar: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
