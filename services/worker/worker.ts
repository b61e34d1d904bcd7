/**
 * A streamsink worker: the engine with the bundled or configured model, the
 * SessionHost scheduler, the gRPC API, snapshots, and (when configured) the
 * Kafka log with Redis-published ownership. With no Kafka and no Redis it is a
 * single self-contained worker: ops run directly, snapshots go to a local
 * directory and sessions survive a restart.
 */
import { Redis } from "ioredis";

import { Engine } from "../engine/index.js";
import { GrpcServer } from "../grpc/grpc-server.js";
import { LocalSessionGateway, type SessionGateway } from "../grpc/session-gateway.js";
import { SecurityMetrics } from "../security/security-metrics.js";
import { TenantGateway } from "../security/tenant-gateway.js";
import { kafkaTlsOptions } from "../security/kafka-client-security.js";
import { buildWorkerSecurity, logPlaintextWarnings, redisConnectionOptions } from "../security/worker-security.js";
import { ClusterSessionGateway } from "./cluster-gateway.js";
import type { WorkerConfig } from "./config.js";
import { KafkaRuntime } from "./kafka/kafka-runtime.js";
import { createLogger, type Logger } from "./logger.js";
import { WorkerMetrics } from "./metrics.js";
import { RedisKeys } from "./redis/keys.js";
import { OwnershipRegistry } from "./redis/ownership-registry.js";
import { RedisSnapshotStore } from "./redis/redis-snapshot-store.js";
import { SessionHost } from "./session-host.js";
import { FileSnapshotStore, type SnapshotStore } from "./snapshot-store.js";
import { Snapshotter } from "./snapshotter.js";

/** grpc.health.v1 service name reporting the snapshot store. */
export const SNAPSHOT_HEALTH = "streamsink.snapshots";

export interface WorkerOptions {
  /** Snapshot cadence in the embedded mode; checkpoint (snapshot + commit) cadence with Kafka. */
  snapshotIntervalMs?: number;
  /** Prefix of Redis keys (tests isolate themselves with it). */
  redisPrefix?: string;
  log?: Logger;
}

export class Worker {
  readonly config: WorkerConfig;
  readonly engine: Engine;
  readonly host: SessionHost;
  readonly grpc: GrpcServer;
  readonly metrics: WorkerMetrics;
  readonly kafka: KafkaRuntime | undefined;
  readonly log: Logger;
  grpcPort = 0;
  metricsPort = 0;
  readonly #snapshots: Snapshotter;
  readonly #gateway: SessionGateway & { close?: () => void };
  readonly #redis: Redis | undefined;
  readonly #closeSecurity: () => void;
  #stopped: Promise<void> | undefined;

  private constructor(parts: {
    config: WorkerConfig;
    engine: Engine;
    host: SessionHost;
    grpc: GrpcServer;
    metrics: WorkerMetrics;
    kafka: KafkaRuntime | undefined;
    snapshots: Snapshotter;
    gateway: SessionGateway;
    redis: Redis | undefined;
    log: Logger;
    closeSecurity: () => void;
  }) {
    this.config = parts.config;
    this.engine = parts.engine;
    this.host = parts.host;
    this.grpc = parts.grpc;
    this.metrics = parts.metrics;
    this.kafka = parts.kafka;
    this.#snapshots = parts.snapshots;
    this.#gateway = parts.gateway;
    this.#redis = parts.redis;
    this.log = parts.log;
    this.#closeSecurity = parts.closeSecurity;
  }

  get advertiseAddress(): string {
    return this.#gateway.selfAddress;
  }

  static async start(config: WorkerConfig, options: WorkerOptions = {}): Promise<Worker> {
    const log = options.log ?? createLogger();
    // Settings files are read before the model loads so a bad one fails fast.
    const security = buildWorkerSecurity(config.security, log);
    logPlaintextWarnings(config, log);
    const interval = options.snapshotIntervalMs ?? config.snapshotIntervalMs;
    const engine = await Engine.load(config.model, {
      backend: config.backend,
      threads: config.threads,
      ...(config.dtype ? { dtype: config.dtype } : {}),
    });
    log.info("model loaded", {
      model: config.model,
      architecture: engine.info.architecture,
      parameters: engine.info.parameters,
      backend: engine.info.backend,
      ...(engine.info.device ? { device: engine.info.device, dtype: engine.info.dtype } : { threads: engine.info.threads }),
    });
    const metrics = new WorkerMetrics();
    let redis: Redis | undefined;
    let store: SnapshotStore;
    let redisReconnected: (() => void) | undefined;
    let storeHealth: ((up: boolean) => void) | undefined;
    const keys = new RedisKeys(options.redisPrefix);
    if (config.redisUrl) {
      redis = new Redis(config.redisUrl, {
        maxRetriesPerRequest: 2,
        enableOfflineQueue: false,
        lazyConnect: true,
        ...redisConnectionOptions(config.security.redis),
      });
      let lastRedisError: Error | undefined;
      redis.on("error", (err: Error) => {
        lastRedisError = err;
        log.warn("redis error", { error: err.message });
      });
      // Snapshot store health: "streamsink.snapshots" in grpc.health.v1 goes
      // NOT_SERVING while Redis is unreachable (the worker keeps serving,
      // snapshots are retried and commits wait).
      redis.on("close", () => storeHealth?.(false));
      redis.on("ready", () => storeHealth?.(true));
      try {
        await redis.connect();
      } catch (err) {
        // Say why (a refused password, an untrusted certificate), not just "Connection is closed".
        redis.disconnect();
        await engine.close();
        throw new Error(`cannot connect to Redis: ${(lastRedisError ?? (err as Error)).message}`, { cause: err });
      }
      // After an outage the store may have lost snapshots: write all again.
      let readyBefore = false;
      redis.on("ready", () => {
        if (readyBefore) {
          log.warn("redis reconnected; re-snapshotting every held session");
          redisReconnected?.();
        }
        readyBefore = true;
      });
      readyBefore = true;
      store = new RedisSnapshotStore(
        redis,
        keys,
        config.snapshotTtlSeconds,
        config.kafkaBrokers.length > 0 ? { group: config.kafkaGroup, topic: config.kafkaInputTopic } : undefined,
      );
    } else {
      store = new FileSnapshotStore(config.snapshotDir);
    }
    const snapshots = new Snapshotter(engine, store, log, metrics);
    const embedded = config.kafkaBrokers.length === 0;
    const defaults = { policy: config.policy, sinks: config.sinks, window: config.window };
    const host = new SessionHost(
      engine,
      defaults,
      config.limits,
      embedded
        ? {
            restore: async (id) => {
              const r = await snapshots.restore(id);
              return r && "session" in r ? r.session : undefined;
            },
            changed: (id) => snapshots.markDirty(id),
            closed: (id) => void snapshots.forget(id),
          }
        : {},
    );
    host.onStep((sessions, tokens, ms) => metrics.onStep(sessions, tokens, ms));
    host.setTenantPolicy(security.tenantPolicy);
    const securityMetrics = new SecurityMetrics(metrics.registry);
    security.authenticator.onFailure((reason) => securityMetrics.authFailed(reason));
    security.limiter.onRejected((limit, tenant) => securityMetrics.limitHit(limit, tenant));
    metrics.attach({ host, snapshots });

    let kafka: KafkaRuntime | undefined;
    let gateway: SessionGateway & { close?: () => void; selfAddress: string };
    if (embedded) {
      snapshots.attach(host, interval);
      gateway = new LocalSessionGateway(host);
    } else {
      snapshots.attach(host, 0);
      kafka = new KafkaRuntime(
        {
          brokers: config.kafkaBrokers,
          clientId: `streamsink-${process.pid}`,
          group: config.kafkaGroup,
          inputTopic: config.kafkaInputTopic,
          outputTopic: config.kafkaOutputTopic,
          deadLetterTopic: config.kafkaDeadLetterTopic,
          partitions: config.kafkaPartitions,
          maxMessageBytes: config.maxMessageBytes,
          ssl: kafkaTlsOptions(config.kafkaSsl, config.security),
          sasl: config.kafkaSasl,
          checkpointMs: interval,
          checkpointEveryTokens: config.snapshotEveryTokens,
          pauseAboveQueuedOps: config.limits.maxQueuePerSession * 16,
        },
        host,
        snapshots,
        log,
        {
          op: (op) => metrics.observeOp(op),
          fetchLag: (partition, records) => metrics.setFetchLag(partition, records),
          ...(redis ? { claimPartition: (p: number) => new OwnershipRegistry(redis!, keys, config.kafkaGroup, config.kafkaInputTopic).claim(p) } : {}),
          deadLettered: () => metrics.deadLettered.inc(),
          assigned: (partitions) => {
            metrics.setAssignedPartitions(partitions);
            if (owners) owners.publish(partitions, gateway.selfAddress).catch((err: unknown) => log.warn("ownership publish failed", { error: String(err) }));
          },
        },
      );
      const owners = redis ? new OwnershipRegistry(redis, keys, config.kafkaGroup, config.kafkaInputTopic) : undefined;
      const runtime = kafka;
      redisReconnected = () => {
        runtime.resnapshotAll();
        if (owners) owners.publish(runtime.assignedPartitions, gateway.selfAddress).catch(() => undefined);
      };
      const clusterGateway = new ClusterSessionGateway(host, kafka, owners, "", security.forwarding);
      metrics.attach({ forwardedCalls: () => clusterGateway.forwardedCalls });
      gateway = clusterGateway;
    }

    const tenantGateway = new TenantGateway(embedded ? wrapMetrics(gateway, metrics) : gateway, security.limiter, (limit, tenant) =>
      securityMetrics.limitHit(limit, tenant),
    );
    const grpc = new GrpcServer(tenantGateway, {
      maxReceiveMessageBytes: config.maxMessageBytes,
      authenticator: security.authenticator,
      limiter: security.limiter,
      ...(security.serverCredentials ? { credentials: security.serverCredentials } : {}),
      onInternalError: (method, err) => log.error("internal error answering a call", { method, error: String(err) }),
    });
    const grpcPort = await grpc.start(config.grpcHost, config.grpcPort);
    gateway.selfAddress = config.grpcPort === 0 ? config.advertiseAddress.replace(/:\d+$/, `:${grpcPort}`) : config.advertiseAddress;
    const worker = new Worker({ config, engine, host, grpc, metrics, kafka, snapshots, gateway, redis, log, closeSecurity: () => security.close() });
    grpc.setComponentHealth(SNAPSHOT_HEALTH, redis ? redis.status === "ready" : true);
    storeHealth = (up) => {
      grpc.setComponentHealth(SNAPSHOT_HEALTH, up);
      if (!up) log.warn("snapshot store unreachable: serving degraded (snapshots retried, offsets not committed)");
    };
    worker.grpcPort = grpcPort;
    if (config.metricsPort > 0) worker.metricsPort = await metrics.listen(config.grpcHost, config.metricsPort);
    if (kafka) await kafka.start();
    grpc.setServing(true);
    log.info("worker serving", {
      grpc: `${config.grpcHost}:${grpcPort}`,
      advertise: gateway.selfAddress,
      metrics: worker.metricsPort || null,
      mode: embedded ? "embedded (in-process log, local snapshots)" : "cluster (Kafka log)",
      tls: config.security.grpcTls ? (config.security.grpcTls.clientCaFile ? "mutual" : "server") : "off",
      authentication: security.authenticator.enabled ? "bearer tokens" : "off (default tenant)",
      snapshots: redis ? "redis" : config.snapshotDir,
    });
    return worker;
  }

  /** Graceful stop: refuse new calls, finish in-flight work, snapshot, commit, release. */
  stop(graceMs = 10_000): Promise<void> {
    this.#stopped ??= this.#stop(graceMs);
    return this.#stopped;
  }

  async #stop(graceMs: number): Promise<void> {
    this.log.info("worker stopping");
    this.grpc.setServing(false);
    await this.grpc.stop(graceMs);
    if (this.kafka) await this.kafka.stop();
    await this.host.idle();
    // With Kafka, the runtime's final checkpoint (taken while this worker still
    // owned its partitions) is the last write; later writes could replace a
    // new owner's snapshots.
    await this.#snapshots.stop(!this.kafka);
    this.#gateway.close?.();
    await this.host.close();
    await this.engine.close();
    await this.metrics.close();
    if (this.#redis) await this.#redis.quit().catch(() => undefined);
    this.#closeSecurity();
    this.log.info("worker stopped");
  }
}

/** Times and counts directly executed ops (the Kafka runtime reports its own through events.op). */
function wrapMetrics(gateway: SessionGateway & { selfAddress: string }, metrics: WorkerMetrics): SessionGateway {
  return {
    get selfAddress() {
      return gateway.selfAddress;
    },
    execute: (op, emit, signal, context) => {
      const observer = metrics.observeOp(op);
      return gateway
        .execute(
          op,
          (e) => {
            observer.event(e);
            emit(e);
          },
          signal,
          context,
        )
        .then(
          () => observer.done(),
          (err: unknown) => {
            observer.done(err);
            throw err;
          },
        );
    },
    getSession: (id, context) => gateway.getSession(id, context),
  };
}
