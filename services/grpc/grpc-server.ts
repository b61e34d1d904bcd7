/**
 * GrpcServer: the streamsink.v1.StreamingLLM service over a SessionGateway,
 * plus grpc.health.v1 and server reflection.
 *
 * Handlers decode and validate requests (op-codec.ts), run them through the
 * gateway, and map every failure to a status in grpc-status.ts. A handler
 * never throws into grpc-js (which would answer UNKNOWN). Each call's
 * cancellation (client cancel, deadline, forced shutdown) reaches the gateway
 * as an AbortSignal, so a Generate stops decoding when nobody is listening.
 */
import {
  type handleBidiStreamingCall,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type Metadata,
  Server,
  ServerCredentials,
  type ServerOptions,
  status as Status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";

import { Authenticator } from "../security/authenticator.js";
import type { Permission } from "../security/tenants-file.js";
import type { TenantLimiter } from "../security/tenant-limiter.js";
import { SessionMissingError } from "../worker/errors.js";
import type { SessionEvent } from "../worker/operations.js";
import { callCancellation } from "./call-cancellation.js";
import { type GrpcFailure, toGrpcFailure } from "./grpc-status.js";
import type {
  AppendRequestMessage,
  AppendResponseMessage,
  CloseSessionRequestMessage,
  CloseSessionResponseMessage,
  GenerateRequestMessage,
  GenerateResponseMessage,
  GetSessionRequestMessage,
  SessionInfoMessage,
  StreamRequestMessage,
  StreamResponseMessage,
} from "./messages.js";
import { decodeAppend, decodeClose, decodeGenerate, decodeSessionId, encodeAppended, encodeClosed, encodeFinished, encodeSessionInfo, encodeToken } from "./op-codec.js";
import { SERVICE_NAME, streamsinkProto } from "./proto.js";
import { FORWARDED_METADATA_KEY, type GatewayCallContext, type SessionGateway } from "./session-gateway.js";
import { StreamCall } from "./stream-call.js";

export interface GrpcServerOptions {
  /** Largest request message accepted, in bytes (larger: RESOURCE_EXHAUSTED). Default 4 MiB. */
  maxReceiveMessageBytes?: number;
  /** Largest response message sent, in bytes; default unlimited. */
  maxSendMessageBytes?: number;
  /** max_new_tokens of a Generate that leaves it unset. Default 128. */
  defaultMaxNewTokens?: number;
  /** Requests queued on one Stream call before the server stops reading it. Default 64. */
  maxStreamBacklog?: number;
  /** Default: insecure (plaintext), for a service behind the cluster network. */
  credentials?: ServerCredentials;
  /** Told about every failure answered with INTERNAL (a bug or an engine fault), for the log. */
  onInternalError?: (method: string, err: unknown) => void;
  /** Who may call (bearer tokens, JWT, peer signatures); default: everyone is the default tenant. */
  authenticator?: Authenticator;
  /** Open-stream limits for Generate and Stream calls (not counted for calls forwarded by another worker). */
  limiter?: TenantLimiter;
}

export const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 4 << 20;
export const DEFAULT_MAX_NEW_TOKENS = 128;

/** Health status names: "" is the whole server. */
const HEALTH_SERVICES = ["", SERVICE_NAME];


export class GrpcServer {
  readonly #gateway: SessionGateway;
  readonly #server: Server;
  readonly #health: HealthImplementation;
  readonly #credentials: ServerCredentials;
  readonly #defaultMaxNewTokens: number;
  readonly #maxStreamBacklog: number;
  readonly #onInternalError: (method: string, err: unknown) => void;
  readonly #authenticator: Authenticator;
  readonly #limiter: TenantLimiter | undefined;
  #port: number | undefined;

  constructor(gateway: SessionGateway, options: GrpcServerOptions = {}) {
    this.#gateway = gateway;
    this.#credentials = options.credentials ?? ServerCredentials.createInsecure();
    this.#defaultMaxNewTokens = options.defaultMaxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
    this.#maxStreamBacklog = Math.max(1, options.maxStreamBacklog ?? 64);
    this.#onInternalError = options.onInternalError ?? (() => undefined);
    this.#authenticator = options.authenticator ?? new Authenticator();
    this.#limiter = options.limiter;
    const serverOptions: ServerOptions = {
      "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
      "grpc.max_send_message_length": options.maxSendMessageBytes ?? -1,
    };
    this.#server = new Server(serverOptions);

    const proto = streamsinkProto();
    const implementation: UntypedServiceImplementation = {
      Append: this.#append,
      Generate: this.#generate,
      Stream: this.#stream,
      GetSession: this.#getSession,
      CloseSession: this.#closeSession,
    };
    this.#server.addService(proto.service, implementation);

    // Not serving until the worker says it is ready (setServing(true)).
    this.#health = new HealthImplementation(Object.fromEntries(HEALTH_SERVICES.map((s) => [s, "NOT_SERVING" as ServingStatus])));
    this.#health.addToServer(this.#server);
    new ReflectionService(proto.packageDefinition).addToServer(this.#server);
  }

  /** The bound port once start() has resolved. */
  get port(): number | undefined {
    return this.#port;
  }

  /** What grpc.health.v1 reports for the server ("") and for streamsink.v1.StreamingLLM. */
  setServing(serving: boolean): void {
    for (const service of HEALTH_SERVICES) this.#health.setStatus(service, serving ? "SERVING" : "NOT_SERVING");
  }

  /**
   * Health of one component under its own grpc.health.v1 service name (e.g.
   * "streamsink.snapshots"): a degraded dependency is visible to operators
   * while the server itself keeps SERVING.
   */
  setComponentHealth(component: string, healthy: boolean): void {
    this.#health.setStatus(component, healthy ? "SERVING" : "NOT_SERVING");
  }

  /** Binds and starts serving; resolves to the bound port (port 0 picks a free one). */
  start(host = "0.0.0.0", port = 50051): Promise<number> {
    const address = host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
    return new Promise((resolve, reject) => {
      this.#server.bindAsync(address, this.#credentials, (err, bound) => {
        if (err) {
          reject(new Error(`cannot listen for gRPC on ${address}: ${err.message}`, { cause: err }));
          return;
        }
        this.#port = bound;
        resolve(bound);
      });
    });
  }

  /**
   * Reports NOT_SERVING, refuses new calls and lets running ones finish for up
   * to `graceMs`; then cancels whatever still runs (generations stop).
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.setServing(false);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, graceMs);
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** The call's tenant; throws UnauthenticatedError or PermissionDeniedError. */
  #context(call: { metadata: Metadata }, permission: Permission): GatewayCallContext {
    const principal = this.#authenticator.authenticate(call.metadata, permission);
    return { forwarded: call.metadata.get(FORWARDED_METADATA_KEY).length > 0, tenant: principal.tenant };
  }

  /** Holds an open-stream slot for the call's tenant; the result releases it. */
  #openStream(context: GatewayCallContext): () => void {
    if (!this.#limiter || context.forwarded) return () => undefined;
    return this.#limiter.openStream(context.tenant!);
  }

  #fail(method: string, err: unknown): GrpcFailure {
    const failure = toGrpcFailure(err);
    if (failure.code === Status.INTERNAL) this.#onInternalError(method, err);
    return failure;
  }

  readonly #append: handleUnaryCall<AppendRequestMessage, AppendResponseMessage> = (call, callback) => {
    const cancellation = callCancellation(call);
    let response: AppendResponseMessage | undefined;
    const collect = (event: SessionEvent): void => {
      if (event.kind === "appended") response = encodeAppended(event);
    };
    Promise.resolve()
      .then(() => this.#gateway.execute(decodeAppend(call.request), collect, cancellation.signal, this.#context(call, "write")))
      .then(
        () => {
          if (response) callback(null, response);
          else callback(this.#fail("Append", new Error("the append finished without a result")));
        },
        (err: unknown) => callback(this.#fail("Append", err)),
      )
      .finally(() => cancellation.release());
  };

  readonly #generate: handleServerStreamingCall<GenerateRequestMessage, GenerateResponseMessage> = (call) => {
    const cancellation = callCancellation(call);
    const forward = (event: SessionEvent): void => {
      if (cancellation.signal.aborted) return;
      if (event.kind === "token") call.write({ token: encodeToken(event) });
      else if (event.kind === "finished") call.write({ finished: encodeFinished(event) });
    };
    let release = (): void => undefined;
    Promise.resolve()
      .then(() => {
        const context = this.#context(call, "write");
        const op = decodeGenerate(call.request, this.#defaultMaxNewTokens);
        release = this.#openStream(context);
        return this.#gateway.execute(op, forward, cancellation.signal, context);
      })
      .then(
        () => call.end(),
        (err: unknown) => call.emit("error", this.#fail("Generate", err)),
      )
      .finally(() => {
        release();
        cancellation.release();
      });
  };

  readonly #stream: handleBidiStreamingCall<StreamRequestMessage, StreamResponseMessage> = (call) => {
    let context: GatewayCallContext;
    let release: () => void;
    try {
      context = this.#context(call, "write");
      release = this.#openStream(context);
    } catch (err) {
      call.emit("error", this.#fail("Stream", err));
      return;
    }
    call.once("close", release);
    call.once("finish", release);
    call.once("error", release);
    call.once("cancelled", release);
    new StreamCall(call, this.#gateway, context, {
      defaultMaxNewTokens: this.#defaultMaxNewTokens,
      maxBacklog: this.#maxStreamBacklog,
      onInternalError: this.#onInternalError,
    });
  };

  readonly #getSession: handleUnaryCall<GetSessionRequestMessage, SessionInfoMessage> = (call, callback) => {
    Promise.resolve()
      .then(async () => {
        const context = this.#context(call, "read");
        const id = decodeSessionId(call.request.sessionId);
        const info = await this.#gateway.getSession(id, context);
        if (!info) throw new SessionMissingError(id);
        return encodeSessionInfo(info, this.#gateway.selfAddress);
      })
      .then(
        (info) => callback(null, info),
        (err: unknown) => callback(this.#fail("GetSession", err)),
      );
  };

  readonly #closeSession: handleUnaryCall<CloseSessionRequestMessage, CloseSessionResponseMessage> = (call, callback) => {
    const cancellation = callCancellation(call);
    let response: CloseSessionResponseMessage | undefined;
    const collect = (event: SessionEvent): void => {
      if (event.kind === "closed") response = encodeClosed(event);
    };
    Promise.resolve()
      .then(() => this.#gateway.execute(decodeClose(call.request), collect, cancellation.signal, this.#context(call, "write")))
      .then(
        () => {
          if (response) callback(null, response);
          else callback(this.#fail("CloseSession", new Error("the close finished without a result")));
        },
        (err: unknown) => callback(this.#fail("CloseSession", err)),
      )
      .finally(() => cancellation.release());
  };
}
