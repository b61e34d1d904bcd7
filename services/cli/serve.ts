/**
 * `streamsink serve`: runs one worker until SIGTERM/SIGINT, then stops
 * gracefully (in-flight work finishes, snapshots are written, offsets
 * committed). A second signal exits at once.
 */
import { loadWorkerConfig, serveUsage } from "../worker/config.js";
import { createLogger } from "../worker/logger.js";
import { Worker } from "../worker/worker.js";

export async function runServe(argv: string[]): Promise<void> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(serveUsage() + "\n");
    return;
  }
  const config = loadWorkerConfig(argv);
  const log = createLogger();
  if (config.kafkaBrokers.length > 0 && !config.redisUrl)
    log.warn("Kafka is configured without Redis: gRPC calls for sessions owned by other workers cannot be forwarded, and snapshots stay local");
  const worker = await Worker.start(config, { log });
  await new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        log.warn("second signal: exiting now", { signal });
        process.exit(130);
      }
      stopping = true;
      log.info("signal received; stopping gracefully", { signal });
      worker.stop(Number(process.env.STREAMSINK_SHUTDOWN_GRACE_MS ?? 20000)).then(resolve, (err: unknown) => {
        log.error("graceful stop failed", { error: String(err) });
        resolve();
      });
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}
