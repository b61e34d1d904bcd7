/**
 * StreamsinkClient: a small typed client for streamsink.v1.StreamingLLM,
 * used by the CLI's generate/chat/feed commands and by the tests. Failures
 * are grpc-js ServiceErrors (numeric `code`, `details`, trailers in
 * `metadata`; see retryAfterMs in grpc-status.ts).
 */
import { type ChannelCredentials, Client, type ClientDuplexStream, credentials, type CallOptions as GrpcCallOptions, Metadata } from "@grpc/grpc-js";
import type { MethodDefinition } from "@grpc/proto-loader";
import { service as healthService, type ServingStatus } from "grpc-health-check";

import type { Policy } from "../engine/index.js";
import type { FinishReason, OpInput, SamplingParams, SessionConfig } from "../worker/operations.js";
import type {
  AppendRequestMessage,
  AppendResponseMessage,
  CloseSessionResponseMessage,
  GenerateFinishedMessage,
  GenerateRequestMessage,
  GenerateResponseMessage,
  InputMessage,
  SessionInfoMessage,
  StreamRequestMessage,
  StreamResponseMessage,
} from "./messages.js";
import { encodeConfig, finishReasonFromWire, policyFromWire } from "./op-codec.js";
import { SERVICE_NAME, streamsinkProto, type StreamsinkMethods } from "./proto.js";

/** Text or token ids. Setting both is sent as is (the server rejects it). */
export type ClientInput = OpInput;

export interface AppendParams {
  sessionId: string;
  input: ClientInput;
  returnLogprobs?: boolean;
  requestId?: string;
  /** Used if this request creates the session. */
  config?: SessionConfig;
}

export interface GenerateParams {
  sessionId: string;
  prompt?: ClientInput;
  /** Greedy when absent. */
  sampling?: SamplingParams;
  /** Absent: the server's default. */
  maxNewTokens?: number;
  stop?: string[];
  requestId?: string;
  config?: SessionConfig;
}

export interface RpcOptions {
  /** Absolute deadline (a Date or epoch milliseconds); the call fails with DEADLINE_EXCEEDED after it. */
  deadline?: Date | number;
  /** Aborting cancels the call (CANCELLED). */
  signal?: AbortSignal;
  /** Request headers. */
  metadata?: Record<string, string>;
}

export interface ConnectOptions {
  /** How long to wait for the server to become reachable. Default 10 s. */
  readyTimeoutMs?: number;
  /** Largest response message accepted, in bytes. Default 4 MiB (grpc-js's). */
  maxReceiveMessageBytes?: number;
  /** TLS / mTLS (services/security/tls.ts); default plaintext. */
  credentials?: ChannelCredentials;
  /** Sent as `authorization: Bearer <token>` on every call. */
  bearerToken?: string;
}

export interface GeneratedToken {
  /** The token id. */
  id: number;
  /** The text it adds. */
  text: string;
  /** 0, 1, 2, ... within its generation. */
  index: number;
}

export interface GenerationFinished {
  requestId: string;
  reason: FinishReason;
  promptTokens: number;
  generatedTokens: number;
  /** The generated text, cut before the stop sequence when reason is "stop". */
  text: string;
}

export type GenerateEvent = ({ type: "token" } & GeneratedToken) | ({ type: "finished" } & GenerationFinished);

/** One response of a `Stream` call, tagged with the request it answers. */
export type StreamEvent =
  | ({ type: "append"; requestId: string } & AppendResponseMessage)
  | ({ type: "token"; requestId: string } & GeneratedToken)
  | ({ type: "finished" } & GenerationFinished)
  | { type: "error"; requestId: string; /** A gRPC status code. */ code: number; message: string; retryAfterMs: number };

export interface ClientSessionInfo extends Omit<SessionInfoMessage, "policy"> {
  policy: Policy;
}

export function inputMessage(input: ClientInput): InputMessage {
  return {
    ...(input.text !== undefined ? { text: input.text } : {}),
    ...(input.tokens !== undefined ? { tokens: { ids: input.tokens } } : {}),
  };
}

export function appendRequest(params: AppendParams): AppendRequestMessage {
  return {
    sessionId: params.sessionId,
    input: inputMessage(params.input),
    returnLogprobs: params.returnLogprobs ?? false,
    requestId: params.requestId ?? "",
    config: params.config ? encodeConfig(params.config) : null,
  };
}

export function generateRequest(params: GenerateParams): GenerateRequestMessage {
  return {
    sessionId: params.sessionId,
    prompt: params.prompt ? inputMessage(params.prompt) : null,
    sampling: params.sampling ?? null,
    ...(params.maxNewTokens !== undefined ? { maxNewTokens: params.maxNewTokens } : {}),
    stop: params.stop ?? [],
    requestId: params.requestId ?? "",
    config: params.config ? encodeConfig(params.config) : null,
  };
}

function finished(message: GenerateFinishedMessage): GenerationFinished {
  const reason = finishReasonFromWire(message.finishReason);
  if (!reason) throw new Error(`the server sent an unknown finish reason ${String(message.finishReason)}`);
  return { requestId: message.requestId, reason, promptTokens: message.promptTokens, generatedTokens: message.generatedTokens, text: message.text };
}

function streamEvent(message: StreamResponseMessage): StreamEvent {
  const requestId = message.requestId;
  if (message.append) return { type: "append", ...message.append, requestId };
  if (message.token) return { type: "token", requestId, ...message.token };
  if (message.finished) return { type: "finished", ...finished(message.finished) };
  if (message.error) return { type: "error", requestId, ...message.error };
  throw new Error(`the server sent an empty response for request "${requestId}"`);
}

function metadataOf(options: RpcOptions, bearerToken: string | undefined): Metadata {
  const metadata = new Metadata();
  if (bearerToken !== undefined) metadata.set("authorization", `Bearer ${bearerToken}`);
  for (const [key, value] of Object.entries(options.metadata ?? {})) metadata.set(key, value);
  return metadata;
}

function callOptions(options: RpcOptions): GrpcCallOptions {
  return options.deadline !== undefined ? { deadline: options.deadline } : {};
}

/** Cancels `call` when `signal` fires; returns the function that stops listening. */
function cancelOnAbort(call: { cancel(): void }, signal: AbortSignal | undefined): () => void {
  if (!signal) return () => undefined;
  const cancel = (): void => call.cancel();
  if (signal.aborted) cancel();
  else signal.addEventListener("abort", cancel, { once: true });
  return () => signal.removeEventListener("abort", cancel);
}

/** A `Stream` call: send requests, read the responses in order. */
export class StreamsinkStream implements AsyncIterable<StreamEvent> {
  readonly #call: ClientDuplexStream<StreamRequestMessage, StreamResponseMessage>;

  constructor(call: ClientDuplexStream<StreamRequestMessage, StreamResponseMessage>) {
    this.#call = call;
  }

  /** Sends a raw request message. */
  send(request: StreamRequestMessage): void {
    this.#call.write(request);
  }

  append(params: AppendParams): void {
    this.send({ append: appendRequest(params) });
  }

  generate(params: GenerateParams): void {
    this.send({ generate: generateRequest(params) });
  }

  /** Stops a generate sent earlier on this stream (it finishes with reason "cancelled"). */
  cancelRequest(requestId: string): void {
    this.send({ cancel: { requestId } });
  }

  /** No more requests: the server finishes the queued ones, then ends the stream. */
  end(): void {
    this.#call.end();
  }

  /** Cancels the whole call. */
  cancel(): void {
    this.#call.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamEvent> {
    for await (const message of this.#call as AsyncIterable<StreamResponseMessage>) yield streamEvent(message);
  }
}

export class StreamsinkClient {
  readonly address: string;
  readonly #client: Client;
  readonly #methods: StreamsinkMethods;
  readonly #bearerToken: string | undefined;

  private constructor(address: string, client: Client, bearerToken?: string) {
    this.address = address;
    this.#client = client;
    this.#bearerToken = bearerToken;
    this.#methods = streamsinkProto().methods;
  }

  /** Opens a channel to `address` (host:port) and waits until the server is reachable. */
  static async connect(address: string, options: ConnectOptions = {}): Promise<StreamsinkClient> {
    const client = new Client(address, options.credentials ?? credentials.createInsecure(), {
      ...(options.maxReceiveMessageBytes !== undefined ? { "grpc.max_receive_message_length": options.maxReceiveMessageBytes } : {}),
    });
    const timeoutMs = options.readyTimeoutMs ?? 10_000;
    try {
      await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve())));
    } catch (err) {
      client.close();
      throw new Error(`cannot reach a streamsink server at ${address} within ${timeoutMs} ms: ${(err as Error).message}`, { cause: err });
    }
    return new StreamsinkClient(address, client, options.bearerToken);
  }

  append(params: AppendParams, options: RpcOptions = {}): Promise<AppendResponseMessage> {
    return this.#unary(this.#methods.append, appendRequest(params), options);
  }

  /** Token events in index order, then one finished event. Leaving the loop early cancels the call. */
  async *generate(params: GenerateParams, options: RpcOptions = {}): AsyncGenerator<GenerateEvent, void, undefined> {
    const method = this.#methods.generate;
    const call = this.#client.makeServerStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      generateRequest(params),
      metadataOf(options, this.#bearerToken),
      callOptions(options),
    );
    const stopListening = cancelOnAbort(call, options.signal);
    let done = false;
    try {
      for await (const message of call as AsyncIterable<GenerateResponseMessage>) {
        if (message.token) yield { type: "token", ...message.token };
        else if (message.finished) {
          done = true;
          yield { type: "finished", ...finished(message.finished) };
        }
      }
    } finally {
      stopListening();
      if (!done) call.cancel();
    }
  }

  /** Opens a bidirectional `Stream` call. */
  openStream(options: RpcOptions = {}): StreamsinkStream {
    const method = this.#methods.stream;
    const call = this.#client.makeBidiStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, metadataOf(options, this.#bearerToken), callOptions(options));
    cancelOnAbort(call, options.signal);
    return new StreamsinkStream(call);
  }

  async getSession(sessionId: string, options: RpcOptions = {}): Promise<ClientSessionInfo> {
    const info = await this.#unary(this.#methods.getSession, { sessionId }, options);
    const policy = policyFromWire(info.policy, "policy");
    if (!policy) throw new Error(`the server sent no policy for session "${sessionId}"`);
    return { ...info, policy };
  }

  closeSession(sessionId: string, options: RpcOptions & { requestId?: string } = {}): Promise<CloseSessionResponseMessage> {
    return this.#unary(this.#methods.closeSession, { sessionId, requestId: options.requestId ?? "" }, options);
  }

  /** grpc.health.v1 Check: "SERVING", "NOT_SERVING", ... for `service` ("" is the whole server). */
  async health(service = SERVICE_NAME, options: RpcOptions = {}): Promise<ServingStatus> {
    const check = healthService.Check as unknown as MethodDefinition<{ service: string }, { status: ServingStatus }>;
    const response = await this.#unary(check, { service }, options);
    return response.status;
  }

  close(): void {
    this.#client.close();
  }

  #unary<Req, Res>(method: MethodDefinition<Req, Res>, request: Req, options: RpcOptions): Promise<Res> {
    return new Promise((resolve, reject) => {
      let stopListening = (): void => undefined;
      const call = this.#client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        metadataOf(options, this.#bearerToken),
        callOptions(options),
        (err, response) => {
          stopListening();
          if (err) reject(err);
          else if (response === undefined) reject(new Error(`${method.path} returned no response`));
          else resolve(response);
        },
      );
      stopListening = cancelOnAbort(call, options.signal);
    });
  }
}
