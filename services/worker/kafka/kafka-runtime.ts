/**
 * The worker's Kafka side. The consumer group's assignment of input-topic
 * partitions decides which sessions this worker owns. Records are decoded and
 * handed to the SessionHost in partition order (per-session order follows),
 * without waiting for each to finish, so sessions of one partition still
 * share engine steps. Results go to the output topic; malformed records go to
 * the dead-letter topic with the reason. Offsets are committed by hand, only
 * up to what durable snapshots cover (offset-tracker.ts). When too many ops
 * are queued, partitions are paused until the host drains.
 */
import { type Admin, type Consumer, type EachMessagePayload, Kafka, logLevel, type Producer, type SASLOptions } from "kafkajs";

import { ServiceError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { SessionEvent, SessionOp } from "../operations.js";
import type { SessionHost } from "../session-host.js";
import type { Snapshotter } from "../snapshotter.js";
import { PartitionOffsets } from "./offset-tracker.js";
import { decodeCommitMetadata, encodeCommitMetadata, OutputReplay } from "./output-replay.js";
import { partitionOf } from "./partitioner.js";
import { randomUUID } from "node:crypto";

import { EngineError } from "../../engine/index.js";

import { InvalidRequestError, LimitExceededError, OwnerUnavailableError, SessionMissingError } from "../errors.js";
import {
  decodeInputRecord,
  decodeOutputRecord,
  encodeErrorRecord,
  encodeInputRecord,
  encodeOutputRecord,
  MalformedRecordError,
  type OutputRecord,
} from "./record-codec.js";

export interface KafkaRuntimeOptions {
  brokers: string[];
  clientId: string;
  group: string;
  inputTopic: string;
  outputTopic: string;
  deadLetterTopic: string;
  /** Partitions of the input topic when this worker has to create it. */
  partitions: number;
  maxMessageBytes: number;
  /** TLS to the brokers: true (system CAs) or TLS options (a CA, a client certificate). */
  ssl: boolean | { ca?: Buffer[]; cert?: Buffer; key?: Buffer };
  /** SASL authentication, when configured. */
  sasl: { mechanism: "plain" | "scram-sha-256" | "scram-sha-512"; username: string; password: string } | undefined;
  /** Snapshot + commit cadence. */
  checkpointMs: number;
  /** Also checkpoint as soon as a session has taken this many tokens since its last snapshot (0 = time only). */
  checkpointEveryTokens: number;
  /** Pause fetching while more ops than this are queued on the host. */
  pauseAboveQueuedOps: number;
}

/**
 * Receives the events of an op this worker logged for one of its gRPC
 * callers. Events arrive from the local execution or, if the partition moved
 * before the op ran, from the output topic (whichever worker applied it);
 * `nextSeq` drops the copy that comes second.
 */
interface Waiter {
  emit: (e: SessionEvent) => void;
  resolve: () => void;
  reject: (err: unknown) => void;
  nextSeq: number;
}

/** Snapshots waiting for a session's op boundary or being written, at most (bounds exported bytes held). */
const MAX_SAVES_IN_FLIGHT = 16;

/** The rejection of ops dropped because their partition moved to another worker. */
const evicted = new OwnerUnavailableError("the session moved to another worker");

/** Rebuilds the error of a request that failed on another worker. */
function errorFromRecord(code: string, message: string): Error {
  switch (code) {
    case "INVALID_REQUEST":
    case "E_INVALID_ARGUMENT":
      return new InvalidRequestError(message);
    case "LIMIT_EXCEEDED":
    case "E_CAPACITY":
      return new LimitExceededError(message);
    case "SESSION_NOT_FOUND":
    case "E_SESSION_NOT_FOUND":
      return new SessionMissingError(message);
    case "OWNER_UNAVAILABLE":
    case "SHUTTING_DOWN":
      return new OwnerUnavailableError(message);
    default:
      // Not retryable: the op ran (or partly ran) on another worker.
      return new EngineError("E_INTERNAL", message);
  }
}

/** The request id of a record that failed to decode, when it can be read. */
function decodeRequestId(value: Buffer | null): string {
  try {
    const o = JSON.parse(value?.toString("utf8") ?? "") as { request_id?: unknown };
    return typeof o.request_id === "string" ? o.request_id : "";
  } catch {
    return "";
  }
}

/** Waiters are per (session, request id): request ids need only be unique within a session. */
function waiterKey(session: string, requestId: string): string {
  return `${session}\u0000${requestId}`;
}

export interface KafkaRuntimeEvents {
  /** Assigned input partitions changed (after a rebalance). */
  assigned?: (partitions: number[]) => void;
  /** A record was dead-lettered. */
  deadLettered?: (reason: string) => void;
  /** An op starts running on this worker; the returned observer gets its events and its end (metrics). */
  op?: (op: SessionOp) => { event(e: SessionEvent): void; done(err?: unknown): void };
  /** Claims a newly gained partition and returns its ownership epoch (snapshot fencing). */
  claimPartition?: (partition: number) => Promise<number>;
  /** Records left in an input partition after a fetched batch was processed. */
  fetchLag?: (partition: number, records: number) => void;
}

export class KafkaRuntime {
  readonly options: KafkaRuntimeOptions;
  readonly #host: SessionHost;
  readonly #snapshots: Snapshotter;
  readonly #log: Logger;
  readonly #kafka: Kafka;
  readonly #producer: Producer;
  readonly #consumer: Consumer;
  /** Reads the output topic for waiters whose op ran on another worker. */
  readonly #watcher: Consumer;
  readonly #events: KafkaRuntimeEvents;
  /** Generated tokens recorded on the output topic, for replays (output-replay.ts). */
  readonly #replay = new OutputReplay();
  /** Partitions whose output records are still being read before their input is replayed. */
  readonly #replayPending = new Map<number, Promise<void>>();
  #admin: Admin | undefined;
  /** Replay from the output topic needs output partition p to mirror input partition p. */
  #replayEnabled = false;
  #partitionCount = 0;
  #assigned = new Set<number>();
  readonly #offsets = new Map<number, PartitionOffsets>();
  readonly #sessionPartition = new Map<string, number>();
  /** Per session: records at or below this offset are already in its restored snapshot. */
  readonly #skipUpTo = new Map<string, bigint>();
  readonly #restoreTried = new Set<string>();
  /** Ownership epoch per owned partition, once claimed (written into snapshot meta). */
  readonly #epochs = new Map<number, number>();
  /** Bumped per partition on every gain and loss, so a late claim of an earlier ownership is ignored. */
  readonly #claimRound = new Map<number, number>();
  readonly #waiters = new Map<string, Waiter>();
  readonly #outbox: Array<{ key: string; value: Buffer; headers: Record<string, string> }> = [];
  #flushing: Promise<void> | undefined;
  /** Output records queued and written so far (counts), and who waits for the written count. */
  #outputsQueued = 0;
  #outputsWritten = 0;
  #outputWaiters: Array<{ upTo: number; resolve: () => void }> = [];
  readonly #paused = new Set<number>();
  /** Partitions paused because a session's restore found the snapshot store unreachable. */
  readonly #storeWait = new Set<number>();
  #checkpointTimer: NodeJS.Timeout | undefined;
  /** Tokens per session since the last checkpoint began (for the token cadence). */
  readonly #tokensSince = new Map<string, number>();
  /** Sessions with a snapshot waiting for its op boundary or being written. */
  readonly #saving = new Set<string>();
  #checkpointing: Promise<void> = Promise.resolve();
  /** A checkpoint queued behind the running one and not started yet. */
  #checkpointWaiting: Promise<void> | undefined;
  #stopping = false;
  #stopped = false;

  constructor(options: KafkaRuntimeOptions, host: SessionHost, snapshots: Snapshotter, log: Logger, events: KafkaRuntimeEvents = {}) {
    this.options = options;
    this.#host = host;
    this.#snapshots = snapshots;
    this.#log = log;
    this.#events = events;
    this.#kafka = new Kafka({
      clientId: options.clientId,
      brokers: options.brokers,
      ssl: options.ssl,
      ...(options.sasl ? { sasl: options.sasl as SASLOptions } : {}),
      logLevel: logLevel.WARN,
      retry: { retries: 10, initialRetryTime: 200, maxRetryTime: 5000 },
      logCreator: () => (entry) => {
        const { message, ...rest } = entry.log;
        this.#log.warn(`kafka: ${message}`, { namespace: entry.namespace, ...rest });
      },
    });
    this.#producer = this.#kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
    this.#consumer = this.#kafka.consumer({
      groupId: options.group,
      sessionTimeout: 10000,
      heartbeatInterval: 1000,
      rebalanceTimeout: 20000,
      allowAutoTopicCreation: false,
      maxBytesPerPartition: Math.max(options.maxMessageBytes, 1 << 20),
    });
    this.#watcher = this.#kafka.consumer({ groupId: `${options.group}.watch.${randomUUID()}`, allowAutoTopicCreation: false });
  }

  get assignedPartitions(): number[] {
    return [...this.#assigned].sort((a, b) => a - b);
  }

  get partitionCount(): number {
    return this.#partitionCount;
  }

  partitionOf(session: string): number {
    return partitionOf(session, this.#partitionCount);
  }

  owns(session: string): boolean {
    return this.#assigned.has(this.partitionOf(session));
  }

  /** Creates the topics if missing, connects, joins the group and starts consuming. */
  async start(): Promise<void> {
    const admin = this.#kafka.admin();
    await admin.connect();
    try {
      const existing = new Set(await admin.listTopics());
      const wanted = [
        { topic: this.options.inputTopic, numPartitions: this.options.partitions },
        { topic: this.options.outputTopic, numPartitions: this.options.partitions },
        { topic: this.options.deadLetterTopic, numPartitions: 1 },
      ].filter((t) => !existing.has(t.topic));
      if (wanted.length > 0) {
        try {
          await admin.createTopics({ topics: wanted.map((t) => ({ ...t, replicationFactor: -1 })), waitForLeaders: true });
        } catch (err) {
          // Another worker may have created them at the same moment.
          if (!String((err as Error).message).includes("exists")) throw err;
        }
      }
      const meta = await admin.fetchTopicMetadata({ topics: [this.options.inputTopic, this.options.outputTopic] });
      this.#partitionCount = meta.topics.find((t) => t.name === this.options.inputTopic)!.partitions.length;
      const outputPartitions = meta.topics.find((t) => t.name === this.options.outputTopic)!.partitions.length;
      this.#replayEnabled = outputPartitions === this.#partitionCount;
      if (!this.#replayEnabled)
        this.#log.warn("output topic has another partition count than the input topic: generations are re-sampled on replay", {
          input: this.#partitionCount,
          output: outputPartitions,
        });
    } catch (err) {
      await admin.disconnect();
      throw err;
    }
    this.#admin = admin;
    await this.#producer.connect();
    await this.#watcher.connect();
    await this.#watcher.subscribe({ topics: [this.options.outputTopic], fromBeginning: false });
    await this.#watcher.run({
      eachMessage: async ({ partition, message }) => {
        const record = decodeOutputRecord(message.value);
        this.#replay.observe(partition, BigInt(message.offset), record);
        this.#onOutput(record);
      },
    });
    await this.#consumer.connect();
    this.#consumer.on(this.#consumer.events.GROUP_JOIN, (e) => {
      const assigned = e.payload.memberAssignment[this.options.inputTopic] ?? [];
      void this.#onAssignment(assigned);
    });
    this.#consumer.on(this.#consumer.events.CRASH, (e) => {
      this.#log.error("kafka consumer crashed", { error: String(e.payload.error), restart: e.payload.restart });
    });
    this.#consumer.on(this.#consumer.events.END_BATCH_PROCESS, (e) => this.#events.fetchLag?.(e.payload.partition, Number(e.payload.offsetLag)));
    await this.#consumer.subscribe({ topics: [this.options.inputTopic], fromBeginning: true });
    await this.#consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: Math.max(1, this.#partitionCount),
      eachMessage: (payload) => this.#onMessage(payload),
    });
    this.#checkpointTimer = setInterval(() => void this.checkpoint(), this.options.checkpointMs);
    this.#checkpointTimer.unref();
  }

  /**
   * Logs an op (from a gRPC call on this worker, which owns the session) to
   * the input topic and resolves when the consumer has applied it.
   */
  submit(op: SessionOp, emit: (e: SessionEvent) => void): Promise<void> {
    const key = waiterKey(op.session, op.requestId);
    if (this.#waiters.has(key))
      return Promise.reject(new InvalidRequestError(`request "${op.requestId}" of session "${op.session}" is already in progress`));
    const done = new Promise<void>((resolve, reject) => this.#waiters.set(key, { emit, resolve, reject, nextSeq: 0 }));
    this.#producer
      .send({ topic: this.options.inputTopic, messages: [{ key: op.session, value: encodeInputRecord(op) }] })
      .catch((err: unknown) => {
        const w = this.#waiters.get(key);
        this.#waiters.delete(key);
        w?.reject(err);
      });
    return done;
  }

  /** Produces an input record as an external producer would (feeding, tests). */
  async produceInput(session: string, value: Buffer): Promise<void> {
    await this.#producer.send({ topic: this.options.inputTopic, messages: [{ key: session, value }] });
  }

  async #onAssignment(partitions: number[]): Promise<void> {
    const next = new Set(partitions);
    const lost = [...this.#assigned].filter((p) => !next.has(p));
    const gained = partitions.filter((p) => !this.#assigned.has(p));
    this.#assigned = next;
    // A session held for a partition just gained is left over from an earlier
    // ownership (a record that was in flight at the hand-over): stale.
    for (const p of gained) {
      this.#evictPartitionSessions(p);
      this.#claimRound.set(p, (this.#claimRound.get(p) ?? 0) + 1);
    }
    for (const p of lost) {
      this.#epochs.delete(p);
      this.#claimRound.set(p, (this.#claimRound.get(p) ?? 0) + 1);
    }
    // A pause is kept by the consumer across rebalances: a partition gained
    // (again) starts unpaused, and the pause set is rebuilt from the queues.
    if (gained.length > 0) this.#consumer.resume([{ topic: this.options.inputTopic, partitions: gained }]);
    for (const p of gained) this.#paused.delete(p);
    if (this.#replayEnabled)
      for (const p of gained) {
        const reading: Promise<void> = this.#readRecorded(p, this.#claimRound.get(p)!).finally(() => {
          if (this.#replayPending.get(p) === reading) this.#replayPending.delete(p);
        });
        this.#replayPending.set(p, reading);
      }
    const claim = this.#events.claimPartition;
    if (claim)
      for (const p of gained) {
        const round = this.#claimRound.get(p)!;
        void (async () => {
          for (let attempt = 0; this.#claimRound.get(p) === round && this.#assigned.has(p) && !this.#stopping; attempt++) {
            try {
              const epoch = await claim(p);
              if (this.#claimRound.get(p) === round) this.#epochs.set(p, epoch);
              return;
            } catch (err) {
              this.#log.warn("partition claim failed; retrying", { partition: p, error: String(err) });
              await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** Math.min(attempt, 5))));
            }
          }
        })();
      }
    this.#log.info("input partitions assigned", { partitions: [...next].sort((a, b) => a - b), lost });
    for (const p of lost) {
      this.#paused.delete(p);
      await this.#release(p);
    }
    this.#events.assigned?.(this.assignedPartitions);
  }

  /**
   * Drops the sessions of a partition this worker no longer owns. No snapshot
   * is written now: the new owner may already be applying records, and a late
   * write would replace its newer snapshot. It restores the last snapshot
   * written while this worker owned the partition (consistent with the
   * committed offset) and replays the records after it.
   */
  async #release(partition: number): Promise<void> {
    const sessions = [...this.#sessionPartition].filter(([, p]) => p === partition).map(([s]) => s);
    for (const s of sessions) {
      await this.#host.evict(s, evicted);
      this.#forgetSession(s);
    }
    // Closes whose deletes are pending are replayed by the new owner.
    for (const [s] of this.#offsets.get(partition)?.pendingCloses() ?? []) this.#snapshots.abandonDelete(s);
    this.#offsets.delete(partition);
    this.#storeWait.delete(partition);
    this.#replay.drop(partition);
    this.#replayPending.delete(partition);
  }

  #evictPartitionSessions(partition: number): void {
    for (const id of this.#host.sessionIds()) {
      if (this.partitionOf(id) !== partition) continue;
      void this.#host.evict(id, evicted);
      this.#forgetSession(id);
    }
  }

  /** Drops the per-session bookkeeping of a session closed or moved away. */
  #forgetSession(session: string): void {
    this.#sessionPartition.delete(session);
    this.#skipUpTo.delete(session);
    this.#restoreTried.delete(session);
    this.#tokensSince.delete(session);
    this.#snapshots.released(session);
  }

  /**
   * Before input partition p is replayed from its committed offset, reads
   * what output partition p recorded since (from the bound the commit
   * carries) into the replay index. Retried while the broker does not answer.
   */
  async #readRecorded(partition: number, round: number): Promise<void> {
    for (let attempt = 0; this.#claimRound.get(partition) === round && this.#assigned.has(partition) && !this.#stopping; attempt++) {
      try {
        const [committed] = await this.#admin!.fetchOffsets({ groupId: this.options.group, topics: [this.options.inputTopic] });
        const metadata = committed?.partitions.find((x) => x.partition === partition)?.metadata;
        const ends = await this.#admin!.fetchTopicOffsets(this.options.outputTopic);
        const end = ends.find((x) => x.partition === partition);
        if (!end) throw new Error(`output partition ${partition} not found`);
        const from = decodeCommitMetadata(metadata) ?? BigInt(end.low);
        const done = this.#replay.scan(partition, from, BigInt(end.high));
        const at = this.#replay.position(partition);
        // Back to the bound (records already delivered come again: waiters skip what they have).
        if (from < BigInt(end.high) && (at === undefined || from < at))
          this.#watcher.seek({ topic: this.options.outputTopic, partition, offset: from.toString() });
        await done;
        return;
      } catch (err) {
        this.#log.warn("reading recorded outputs failed; retrying", { partition, error: String(err) });
        await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** Math.min(attempt, 5))));
      }
    }
  }

  /**
   * A cold session's restore found the snapshot store unreachable: only its
   * partition waits, until the store answers (with backoff).
   */
  #waitForStore(partition: number, session: string, offset: string): void {
    if (this.#storeWait.has(partition)) return this.#hold(partition, offset);
    this.#storeWait.add(partition);
    const answered = (async () => {
      for (let attempt = 0; this.#storeWait.has(partition) && !this.#stopping; attempt++) {
        await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** Math.min(attempt, 5))));
        if (await this.#snapshots.reachable(session)) break;
      }
      this.#storeWait.delete(partition);
    })();
    this.#hold(partition, offset, answered);
  }

  /**
   * Holds one input partition back without blocking the others (a handler
   * that waited would stall the fetch of every partition): pauses it, rewinds
   * it to the record at `offset`, and resumes it (the record read again) once
   * `until` settles, unless something else still holds it.
   */
  #hold(partition: number, offset: string, until?: Promise<unknown>): void {
    const tp = { topic: this.options.inputTopic, partitions: [partition] };
    this.#consumer.pause([tp]);
    this.#consumer.seek({ topic: this.options.inputTopic, partition, offset });
    void until?.finally(() => {
      if (this.#stopping || !this.#assigned.has(partition)) return;
      if (this.#paused.has(partition) || this.#storeWait.has(partition) || this.#replayPending.has(partition)) return;
      this.#consumer.resume([tp]);
    });
  }

  async #onMessage({ partition, message }: EachMessagePayload): Promise<void> {
    const offset = BigInt(message.offset);
    let offsets = this.#offsets.get(partition);
    if (!offsets) {
      offsets = new PartitionOffsets();
      this.#offsets.set(partition, offsets);
    }
    if (offsets.alreadyTaken(offset)) return;
    const reading = this.#replayPending.get(partition);
    if (reading) {
      // Its recorded outputs are still being read: the partition waits (others flow).
      this.#hold(partition, message.offset, reading);
      return;
    }
    offsets.started(offset, this.#replay.bound(partition));
    let op: SessionOp;
    let restoring: string | undefined;
    try {
      try {
        op = decodeInputRecord(message.key, message.value, this.options.maxMessageBytes);
      } catch (err) {
        if (!(err instanceof MalformedRecordError)) throw err;
        await this.#deadLetter(partition, message.offset, message.key, message.value, err.message);
        offsets.finished(offset);
        if (message.key) this.#settleWaiter(message.key.toString("utf8"), decodeRequestId(message.value), new InvalidRequestError(err.message));
        return;
      }
      const session = op.session;
      this.#sessionPartition.set(session, partition);
      if (!this.#restoreTried.has(session) && !this.#host.has(session)) {
        this.#restoreTried.add(session);
        restoring = session;
        let restored: Awaited<ReturnType<Snapshotter["restore"]>>;
        try {
          restored = await this.#snapshots.restore(session);
        } catch (err) {
          if (!(err instanceof OwnerUnavailableError)) throw err;
          offsets.abandon(offset);
          this.#restoreTried.delete(session);
          if (this.#assigned.has(partition) && !this.#stopping) this.#waitForStore(partition, session, message.offset);
          return;
        }
        if (restored && "closed" in restored) {
          // Closed at that record (a tombstone): the records up to it are history, the ones after start afresh.
          if (restored.closed.inputOffset !== undefined) this.#skipUpTo.set(session, BigInt(restored.closed.inputOffset));
        } else if (restored && "rejected" in restored) {
          // Tell the session's readers: its state was reset and continues from the records after the last commit.
          this.#send(
            session,
            encodeErrorRecord(session, `snapshot-${message.offset}`, 0, "SNAPSHOT_CORRUPT", `the session's snapshot was unusable (${restored.rejected}); it was reset`),
            `snapshot-${message.offset}`,
          );
        } else if (restored) {
          const i = await restored.session.info();
          await this.#host.adopt(session, restored.session, { policy: i.policy, sinks: i.sinks, window: i.window });
          this.#host.setAppliedOffset(session, restored.meta.inputOffset);
          if (restored.meta.inputOffset !== undefined) {
            const covered = BigInt(restored.meta.inputOffset);
            this.#skipUpTo.set(session, covered);
            offsets.lastApplied.set(session, covered);
          }
        }
      }
    } catch (err) {
      // Undo, so the redelivered record is processed again rather than skipped.
      offsets.abandon(offset);
      if (restoring !== undefined) this.#restoreTried.delete(restoring);
      throw err;
    }
    const session = op.session;
    if (!this.#assigned.has(partition) && this.#assigned.size > 0) {
      // The partition moved while this record waited; its new owner applies it.
      this.#evictPartitionSessions(partition);
      return;
    }
    const skip = this.#skipUpTo.get(session);
    if (skip !== undefined && offset <= skip) {
      // Already applied: the restored snapshot covers this record. A caller
      // still waiting gets the results the earlier owner wrote (watcher).
      this.#replay.take(partition, session, op.requestId);
      offsets.finished(offset);
      return;
    }
    if (op.kind === "generate") {
      // Replayed: the tokens it already produced are re-applied, not sampled again.
      const recorded = this.#replay.take(partition, session, op.requestId);
      if (recorded) op = { ...op, recorded };
    }
    const observer = this.#events.op?.(op);
    let seq = 0;
    const emit = (e: SessionEvent) => {
      const s = seq++;
      this.#send(session, encodeOutputRecord(e, s), op.requestId);
      observer?.event(e);
      this.#countTokens(session, e);
      const waiter = this.#waiters.get(waiterKey(session, op.requestId));
      if (waiter && waiter.nextSeq === s) {
        waiter.nextSeq++;
        waiter.emit(e);
      }
    };
    // Records from the log are never refused for queue room (that would drop
    // input); the partition pauses instead when the host is full.
    const execution = this.#host.execute({ ...op, logOffset: message.offset, fromLog: true }, emit);
    void execution.then(
      () => {
        offsets.finished(offset, session);
        observer?.done();
        if (op.kind === "close") {
          // The snapshot is deleted at the next checkpoint (fenced, after earlier saves); until then the close is not committed past.
          offsets.closed(session, offset);
          this.#snapshots.closed(session);
          this.#forgetSession(session);
        }
        this.#settleWaiter(session, op.requestId, undefined);
        this.#maybeResume();
      },
      (err: unknown) => {
        // Evicted because the partition moved: the new owner applies the
        // record from the log, and a waiting caller gets its results there.
        if (err === evicted) {
          this.#maybeResume();
          return;
        }
        observer?.done(err);
        const code = err instanceof ServiceError ? err.code : ((err as { code?: string }).code ?? "INTERNAL");
        this.#send(session, encodeErrorRecord(session, op.requestId, seq++, code, (err as Error).message), op.requestId);
        offsets.finished(offset);
        this.#settleWaiter(session, op.requestId, err);
        this.#maybeResume();
      },
    );
    if (this.#host.queuedOps > this.options.pauseAboveQueuedOps && !this.#paused.has(partition)) {
      this.#paused.add(partition);
      this.#consumer.pause([{ topic: this.options.inputTopic, partitions: [partition] }]);
    }
  }

  #countTokens(session: string, e: SessionEvent): void {
    const every = this.options.checkpointEveryTokens;
    if (every <= 0) return;
    const n = e.kind === "appended" ? e.tokens.length : e.kind === "token" ? 1 : 0;
    if (n === 0) return;
    const total = (this.#tokensSince.get(session) ?? 0) + n;
    this.#tokensSince.set(session, total);
    if (total >= every) void this.checkpoint();
  }

  #onOutput(r: OutputRecord | undefined): void {
    if (!r) return;
    const key = waiterKey(r.session, r.requestId);
    const w = this.#waiters.get(key);
    if (!w || r.seq !== w.nextSeq) return;
    w.nextSeq++;
    if ("error" in r) {
      this.#waiters.delete(key);
      w.reject(errorFromRecord(r.error.code, r.error.message));
      return;
    }
    w.emit(r.event);
    if (r.event.kind !== "token") {
      this.#waiters.delete(key);
      w.resolve();
    }
  }

  #settleWaiter(session: string, requestId: string, err: unknown): void {
    const key = waiterKey(session, requestId);
    const w = this.#waiters.get(key);
    if (!w) return;
    this.#waiters.delete(key);
    if (err === undefined) w.resolve();
    else w.reject(err);
  }

  #maybeResume(): void {
    if (this.#paused.size === 0 || this.#host.queuedOps > this.options.pauseAboveQueuedOps / 2) return;
    const partitions = [...this.#paused].filter((p) => this.#assigned.has(p) && !this.#storeWait.has(p) && !this.#replayPending.has(p));
    this.#paused.clear();
    if (partitions.length > 0) this.#consumer.resume([{ topic: this.options.inputTopic, partitions }]);
  }

  /** Output records of one session are sent in order. */
  #send(session: string, value: Buffer, requestId: string): void {
    this.#outbox.push({ key: session, value, headers: { "request-id": requestId } });
    this.#outputsQueued++;
    if (!this.#flushing) this.#flushing = this.#flushOutbox();
  }

  /**
   * Output records leave in batches: everything queued while a send is in
   * flight goes out in the next single send, in queue order, so per-session
   * order holds and one round trip carries many sessions' tokens.
   */
  async #flushOutbox(): Promise<void> {
    while (this.#outbox.length > 0) {
      const batch = this.#outbox.splice(0, 2000);
      for (let attempt = 0; ; attempt++) {
        try {
          const written = await this.#producer.send({ topic: this.options.outputTopic, messages: batch });
          for (const w of written) if (w.baseOffset !== undefined) this.#replay.written(w.partition, BigInt(w.baseOffset));
          this.#outputsWritten += batch.length;
          this.#outputWaiters = this.#outputWaiters.filter((w) => (w.upTo <= this.#outputsWritten ? (w.resolve(), false) : true));
          break;
        } catch (err) {
          // The producer retries on its own; past that, keep trying (the broker may be restarting)
          // rather than drop results.
          this.#log.warn("output records not written yet; retrying", { records: batch.length, attempt, error: String(err) });
          await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** Math.min(attempt, 4))));
          if (this.#stopped && attempt > 20) {
            this.#log.error("output records dropped at shutdown", { records: batch.length });
            break;
          }
        }
      }
    }
    this.#flushing = undefined;
  }

  /** Resolves once every output record queued until now is written. */
  #outputsDurable(): Promise<void> {
    const upTo = this.#outputsQueued;
    if (upTo <= this.#outputsWritten) return Promise.resolve();
    return new Promise((resolve) => this.#outputWaiters.push({ upTo, resolve }));
  }

  async #deadLetter(partition: number, offset: string, key: Buffer | null, value: Buffer | null, reason: string): Promise<void> {
    this.#log.warn("record dead-lettered", { partition, offset, reason });
    this.#events.deadLettered?.(reason);
    await this.#producer.send({
      topic: this.options.deadLetterTopic,
      messages: [
        {
          key,
          value,
          headers: {
            "streamsink-dlq-reason": reason,
            "streamsink-source-topic": this.options.inputTopic,
            "streamsink-source-partition": String(partition),
            "streamsink-source-offset": offset,
          },
        },
      ],
    });
  }

  /**
   * The snapshot store came back after an outage and may have lost data (a
   * Redis restart without persistence): snapshot every held session again
   * before committing further.
   */
  resnapshotAll(): void {
    for (const offsets of this.#offsets.values()) offsets.needAllSnapshots();
  }

  /** Snapshots sessions with applied-but-unsnapshotted records, then commits what is covered. */
  checkpoint(): Promise<void> {
    // One waiting checkpoint covers every request made while it waits (the
    // token cadence asks on every token past its threshold).
    if (this.#checkpointWaiting) return this.#checkpointWaiting;
    const next = this.#checkpointing
      .then(() => {
        this.#checkpointWaiting = undefined;
        return this.#checkpointNow();
      })
      .catch((err: unknown) => {
        this.#log.warn("checkpoint failed; will retry", { error: String(err) });
      });
    this.#checkpointWaiting = next;
    this.#checkpointing = next;
    return next;
  }

  /**
   * Snapshots are taken at each session's next op boundary, so a session that
   * is never idle is still snapshotted; at most MAX_SAVES_IN_FLIGHT wait at
   * once. Commits cover what is durable now; saves that wait for a boundary
   * are picked up by a later checkpoint (`waitForSaves` waits for them).
   */
  async #checkpointNow(waitForSaves = false): Promise<void> {
    this.#tokensSince.clear();
    const commits: Array<{ topic: string; partition: number; offset: string; metadata: string }> = [];
    for (const [partition, offsets] of this.#offsets) {
      if (!this.#assigned.has(partition)) continue;
      // Snapshots of a partition carry the epoch claimed for it: none before the claim.
      if (this.#events.claimPartition && !this.#epochs.has(partition)) continue;
      const epoch = this.#epochs.get(partition);
      const fence = { partition, ...(epoch !== undefined ? { epoch } : {}) };
      const closes = offsets.pendingCloses();
      // A new owner that finds a tombstone skips the close: its output must be written first.
      if (closes.length > 0) await this.#outputsDurable();
      for (const [s, closedAt] of closes) {
        if (!this.#assigned.has(partition) || this.#stopped) break;
        if (await this.#snapshots.completeDelete(s, { ...fence, inputOffset: closedAt.toString() })) offsets.deleted(s, closedAt);
      }
      const started: Array<Promise<void>> = [];
      for (const s of offsets.sessionsNeedingSnapshot()) {
        if (this.#saving.size >= MAX_SAVES_IN_FLIGHT) break;
        if (this.#saving.has(s) || offsets.lastApplied.get(s) === undefined) continue;
        if (!this.#host.has(s)) {
          offsets.forget(s);
          continue;
        }
        // Never write for a partition that moved away (checked again at the boundary).
        if (!this.#assigned.has(partition) || this.#stopped) break;
        this.#saving.add(s);
        const save = this.#snapshots.saveAtBoundary(
          s,
          () => {
            if (!this.#assigned.has(partition) || this.#stopped || this.#offsets.get(partition) !== offsets) return undefined;
            const applied = this.#host.appliedOffset(s);
            return { ...fence, ...(applied !== undefined ? { inputOffset: applied } : {}) };
          },
          // A new owner skips the ops this snapshot covers: their outputs must be written first.
          () => this.#outputsDurable(),
        );
        const recorded = save.done.then((saved) => {
          if (saved?.inputOffset !== undefined && this.#offsets.get(partition) === offsets) offsets.snapshotted(s, BigInt(saved.inputOffset));
          this.#saving.delete(s);
        });
        if (save.now || waitForSaves) started.push(recorded);
      }
      await Promise.all(started);
      if (!this.#assigned.has(partition)) continue;
      const c = offsets.committable();
      if (c !== undefined)
        commits.push({
          topic: this.options.inputTopic,
          partition,
          offset: c.toString(),
          metadata: encodeCommitMetadata(offsets.outputBoundAt(c, this.#replay.bound(partition))),
        });
    }
    if (commits.length > 0) await this.#consumer.commitOffsets(commits);
  }

  /** Drains owned work, takes final snapshots, commits, and leaves the group. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    if (this.#checkpointTimer) clearInterval(this.#checkpointTimer);
    this.#consumer.pause([{ topic: this.options.inputTopic }]);
    await this.#host.idle();
    await this.#checkpointing;
    await this.#checkpointNow(true).catch((err: unknown) => this.#log.warn("final checkpoint failed", { error: String(err) }));
    this.#stopped = true;
    while (this.#flushing) await this.#flushing;
    await this.#consumer.disconnect();
    await this.#watcher.disconnect();
    await this.#producer.disconnect();
    await this.#admin?.disconnect();
  }
}
