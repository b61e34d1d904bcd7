/**
 * KafkaLagProbe: per-partition lag of the workers' consumer group on the
 * input topic, from the Kafka admin API: the partition's end offset minus the
 * group's committed offset. The workers commit only what durable snapshots
 * cover, so this is the work a new owner would replay, the number an
 * autoscaler should follow. A partition the group never committed counts from
 * its earliest retained offset (the workers consume from the beginning).
 *
 * Read every `intervalMs` in the background; a failed read keeps the last
 * values, sets `streamsink_sidecar_kafka_up` to 0 and lets the age grow.
 */
import { type Admin, Kafka, logLevel, type SASLOptions } from "kafkajs";

import { Gauge, type Registry } from "prom-client";

import { kafkaTlsOptions } from "../security/kafka-client-security.js";
import type { Logger } from "../worker/logger.js";
import type { KafkaLagConfig } from "./sidecar-config.js";

export interface PartitionLag {
  partition: number;
  endOffset: bigint;
  /** undefined when the group has not committed on this partition. */
  committedOffset: bigint | undefined;
  lag: bigint;
}

export class KafkaLagProbe {
  readonly config: KafkaLagConfig;
  readonly #log: Logger;
  readonly #admin: Admin;
  readonly #lag: Gauge;
  readonly #end: Gauge;
  readonly #committed: Gauge;
  readonly #up: Gauge;
  readonly #age: Gauge;
  #lastGood: number;
  #connected = false;
  #lastError: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #polling: Promise<void> | undefined;
  #stopped = false;
  #listeners: Array<() => void> = [];

  constructor(config: KafkaLagConfig, registry: Registry, log: Logger) {
    this.config = config;
    this.#log = log;
    this.#lastGood = performance.now();
    const sasl: SASLOptions | undefined = config.sasl
      ? ({ mechanism: config.sasl.mechanism, username: config.sasl.username, password: config.sasl.password } as SASLOptions)
      : undefined;
    const kafka = new Kafka({
      clientId: "streamsink-metrics-sidecar",
      brokers: config.brokers,
      ssl: kafkaTlsOptions(config.ssl, config),
      ...(sasl ? { sasl } : {}),
      logLevel: logLevel.NOTHING,
      retry: { retries: 1, initialRetryTime: 200, maxRetryTime: 1000 },
      connectionTimeout: 3000,
      requestTimeout: 10000,
    });
    this.#admin = kafka.admin();
    const labels = ["group", "topic", "partition"] as const;
    this.#lag = new Gauge({
      name: "streamsink_kafka_consumer_group_lag_records",
      help: "Records of the input partition after the consumer group's committed offset (end offset minus committed)",
      labelNames: labels,
      registers: [registry],
    });
    this.#committed = new Gauge({
      name: "streamsink_kafka_consumer_group_committed_offset",
      help: "The consumer group's committed offset on the input partition (absent before the first commit)",
      labelNames: labels,
      registers: [registry],
    });
    this.#end = new Gauge({
      name: "streamsink_kafka_partition_end_offset",
      help: "End offset (high watermark) of the input partition",
      labelNames: ["topic", "partition"] as const,
      registers: [registry],
    });
    this.#up = new Gauge({ name: "streamsink_sidecar_kafka_up", help: "1 when the last read of consumer-group lag succeeded, else 0", registers: [registry] });
    this.#age = new Gauge({
      name: "streamsink_sidecar_kafka_lag_age_seconds",
      help: "Seconds since consumer-group lag was last read successfully",
      registers: [registry],
      collect: () => this.#age.set((performance.now() - this.#lastGood) / 1000),
    });
  }

  get up(): boolean {
    return this.#lastError === undefined && this.#connected;
  }

  get lastError(): string | undefined {
    return this.#lastError;
  }

  get ageSeconds(): number {
    return (performance.now() - this.#lastGood) / 1000;
  }

  /** Polls now and then every interval, until stop(). */
  start(): void {
    const tick = () => {
      if (this.#stopped) return;
      void this.poll().finally(() => {
        if (!this.#stopped) this.#timer = setTimeout(tick, this.config.intervalMs);
      });
    };
    tick();
  }

  /** Calls `listener` after every poll (tests wait on it instead of sleeping). */
  onPoll(listener: () => void): () => void {
    this.#listeners.push(listener);
    return () => (this.#listeners = this.#listeners.filter((l) => l !== listener));
  }

  /** Reads the lag once and sets the gauges; concurrent callers share one read. */
  poll(): Promise<void> {
    this.#polling ??= this.#pollNow().finally(() => {
      this.#polling = undefined;
      for (const l of this.#listeners) l();
    });
    return this.#polling;
  }

  async #pollNow(): Promise<void> {
    let lags: PartitionLag[];
    try {
      lags = await this.read();
    } catch (err) {
      const message = (err as Error).message;
      if (message !== this.#lastError) this.#log.warn("reading consumer-group lag failed; serving the last values", { error: message });
      this.#lastError = message;
      this.#up.set(0);
      return;
    }
    if (this.#lastError !== undefined) this.#log.info("reading consumer-group lag works again");
    this.#lastError = undefined;
    this.#lastGood = performance.now();
    const { group, topic } = this.config;
    this.#lag.reset();
    this.#committed.reset();
    this.#end.reset();
    for (const p of lags) {
      const partition = String(p.partition);
      this.#lag.set({ group, topic, partition }, Number(p.lag));
      this.#end.set({ topic, partition }, Number(p.endOffset));
      if (p.committedOffset !== undefined) this.#committed.set({ group, topic, partition }, Number(p.committedOffset));
    }
    this.#up.set(1);
  }

  /** The lag of every partition of the topic, read now. */
  async read(): Promise<PartitionLag[]> {
    if (!this.#connected) {
      await this.#admin.connect();
      this.#connected = true;
    }
    const { group, topic } = this.config;
    const [ends, committed] = await Promise.all([
      this.#admin.fetchTopicOffsets(topic),
      this.#admin.fetchOffsets({ groupId: group, topics: [topic] }),
    ]);
    const byPartition = new Map<number, string>();
    for (const p of committed.find((t) => t.topic === topic)?.partitions ?? []) byPartition.set(p.partition, p.offset);
    return ends
      .map((p) => {
        const end = BigInt(p.high);
        const low = BigInt(p.low);
        const raw = byPartition.get(p.partition);
        const committedOffset = raw !== undefined && BigInt(raw) >= 0n ? BigInt(raw) : undefined;
        // Records before the earliest retained offset are gone and cannot be replayed.
        const from = committedOffset === undefined || committedOffset < low ? low : committedOffset;
        return { partition: p.partition, endOffset: end, committedOffset, lag: end > from ? end - from : 0n };
      })
      .sort((a, b) => a.partition - b.partition);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#polling;
    if (this.#connected) await this.#admin.disconnect().catch(() => undefined);
    this.#connected = false;
  }
}
