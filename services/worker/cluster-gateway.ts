/**
 * The gRPC server's gateway when Kafka is configured. For a session whose
 * input partition this worker owns, the op is written to the input topic
 * first (the topic is the session's log) and answered when the consumer has
 * applied it. For any other session the call is forwarded to the owner that
 * Redis names; during a rebalance (no owner known, or the named owner is this
 * worker but the partition is not assigned yet) the call is UNAVAILABLE so
 * the client retries. A forwarded call is never forwarded again.
 */
import type { ChannelCredentials } from "@grpc/grpc-js";

import { StreamsinkClient } from "../grpc/grpc-client.js";
import { FORWARDED_METADATA_KEY, type GatewayCallContext, type GatewaySessionInfo, type SessionGateway } from "../grpc/session-gateway.js";
import { InvalidRequestError, LimitExceededError, OwnerUnavailableError, SessionMissingError } from "./errors.js";
import type { KafkaRuntime } from "./kafka/kafka-runtime.js";
import { decodeInputRecord, encodeInputRecord, MalformedRecordError } from "./kafka/record-codec.js";
import type { SessionEvent, SessionOp } from "./operations.js";
import type { OwnershipRegistry } from "./redis/ownership-registry.js";
import type { SessionHost } from "./session-host.js";
import { DEFAULT_TENANT, sessionIdOf } from "../security/tenant.js";

/** How this worker calls other workers. */
export interface ForwardingOptions {
  /** Headers proving a forwarded call comes from a worker, for a tenant (services/security/peer-signature.ts). */
  sign?: (tenant: string) => Record<string, string>;
  /** TLS (and client certificate) for calls to other workers; default plaintext. */
  credentials?: () => ChannelCredentials;
}

export class ClusterSessionGateway implements SessionGateway {
  selfAddress: string;
  readonly #host: SessionHost;
  readonly #kafka: KafkaRuntime;
  readonly #owners: OwnershipRegistry | undefined;
  readonly #clients = new Map<string, Promise<StreamsinkClient>>();
  readonly #forwarding: ForwardingOptions;
  /** Forwarded calls, for metrics. */
  forwardedCalls = 0;

  constructor(host: SessionHost, kafka: KafkaRuntime, owners: OwnershipRegistry | undefined, selfAddress: string, forwarding: ForwardingOptions = {}) {
    this.#forwarding = forwarding;
    this.#host = host;
    this.#kafka = kafka;
    this.#owners = owners;
    this.selfAddress = selfAddress;
  }

  async execute(op: SessionOp, emit: (e: SessionEvent) => void, signal?: AbortSignal, context: GatewayCallContext = { forwarded: false }): Promise<void> {
    if (this.#kafka.owns(op.session)) {
      // Validate before logging so a bad request never enters the log.
      let inputTokens = 0;
      if (op.kind === "append") inputTokens = this.#host.resolveInput(op.input, "append", false).length;
      if (op.kind === "generate") inputTokens = this.#host.resolveInput(op.prompt, "generate prompt", true).length;
      if (op.config) this.#host.resolveConfig(op.config);
      this.#host.checkAdmission(op, inputTokens);
      if (op.kind === "generate" && op.maxNewTokens > this.#host.limits.maxNewTokens)
        throw new LimitExceededError(`max_new_tokens ${op.maxNewTokens} exceeds the limit of ${this.#host.limits.maxNewTokens}`);
      // What the consumer would dead-letter must be refused here, not logged.
      try {
        decodeInputRecord(Buffer.from(op.session, "utf8"), encodeInputRecord(op), this.#kafka.options.maxMessageBytes);
      } catch (err) {
        if (err instanceof MalformedRecordError) throw new InvalidRequestError(err.message);
        throw err;
      }
      return this.#kafka.submit(op, emit);
    }
    const owner = await this.#owner(op.session, context);
    const client = await this.#client(owner);
    this.forwardedCalls++;
    const tenant = context.tenant ?? DEFAULT_TENANT;
    const rpc = { ...(signal ? { signal } : {}), metadata: this.#forwardMetadata(tenant) };
    // The owner scopes the id by the tenant the signature vouches for.
    const sessionId = sessionIdOf(tenant, op.session);
    switch (op.kind) {
      case "append": {
        const r = await client.append(
          { sessionId, input: op.input, returnLogprobs: op.logprobs ?? false, requestId: op.requestId, ...(op.config ? { config: op.config } : {}) },
          rpc,
        );
        emit({
          kind: "appended",
          session: op.session,
          requestId: op.requestId,
          tokens: r.tokenIds,
          ...(op.logprobs ? { logprobs: r.logprobs } : {}),
          tokensSeen: r.tokensSeen,
        });
        return;
      }
      case "generate": {
        for await (const e of client.generate(
          {
            sessionId,
            ...(op.prompt ? { prompt: op.prompt } : {}),
            ...(op.sampling ? { sampling: op.sampling } : {}),
            maxNewTokens: op.maxNewTokens,
            stop: op.stop ?? [],
            requestId: op.requestId,
            ...(op.config ? { config: op.config } : {}),
          },
          rpc,
        )) {
          if (e.type === "token") emit({ kind: "token", session: op.session, requestId: op.requestId, index: e.index, token: e.id, text: e.text });
          else
            emit({
              kind: "finished",
              session: op.session,
              requestId: op.requestId,
              reason: e.reason,
              promptTokens: e.promptTokens,
              generatedTokens: e.generatedTokens,
              text: e.text,
            });
        }
        return;
      }
      case "close": {
        const r = await client.closeSession(sessionId, { ...rpc, requestId: op.requestId });
        emit({ kind: "closed", session: op.session, requestId: op.requestId, existed: r.existed });
        return;
      }
    }
  }

  async getSession(id: string, context: GatewayCallContext = { forwarded: false }): Promise<GatewaySessionInfo | undefined> {
    if (this.#kafka.owns(id)) {
      const info = await this.#host.info(id);
      return info && { ...info, owner: this.selfAddress };
    }
    const owner = await this.#owner(id, context);
    const client = await this.#client(owner);
    this.forwardedCalls++;
    try {
      const tenant = context.tenant ?? DEFAULT_TENANT;
      const r = await client.getSession(sessionIdOf(tenant, id), { metadata: this.#forwardMetadata(tenant) });
      return {
        session: id,
        policy: r.policy as GatewaySessionInfo["policy"],
        sinks: r.sinks,
        window: r.window,
        cacheFill: r.cacheFill,
        capacity: r.capacity,
        tokensSeen: r.tokensSeen,
        owner: r.owner || owner,
      };
    } catch (err) {
      if ((err as { code?: number }).code === 5) throw new SessionMissingError(id);
      throw err;
    }
  }

  async #owner(session: string, context: GatewayCallContext): Promise<string> {
    const partition = this.#kafka.partitionOf(session);
    if (context.forwarded) throw new OwnerUnavailableError(`partition ${partition} of session "${session}" is moving; retry`);
    if (!this.#owners) throw new OwnerUnavailableError(`session "${session}" is owned by another worker and no Redis is configured to find it`);
    const owner = await this.#owners.ownerOf(partition);
    if (!owner || owner === this.selfAddress) throw new OwnerUnavailableError(`partition ${partition} of session "${session}" is being reassigned; retry`);
    return owner;
  }

  #forwardMetadata(tenant: string): Record<string, string> {
    return { [FORWARDED_METADATA_KEY]: "1", ...this.#forwarding.sign?.(tenant) };
  }

  #client(address: string): Promise<StreamsinkClient> {
    let c = this.#clients.get(address);
    if (!c) {
      const credentials = this.#forwarding.credentials?.();
      c = StreamsinkClient.connect(address, { readyTimeoutMs: 3000, ...(credentials ? { credentials } : {}) }).catch((err: unknown) => {
        this.#clients.delete(address);
        throw new OwnerUnavailableError(`owner ${address} is unreachable: ${(err as Error).message}`);
      });
      this.#clients.set(address, c);
    }
    return c;
  }

  close(): void {
    for (const c of this.#clients.values()) void c.then((client) => client.close(), () => undefined);
    this.#clients.clear();
  }
}
