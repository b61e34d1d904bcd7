/**
 * One bidirectional `Stream` call. Requests are answered strictly one after
 * another in arrival order (so responses never interleave, whatever sessions
 * the requests name), each response tagged with its request id. A request
 * that fails gets an in-band RequestError and the next one runs. A cancel
 * message acts at once on a queued or running generate of this stream.
 *
 * Requests that arrive while others run wait in a queue; when it holds
 * `maxBacklog` requests the server stops reading the call (HTTP/2 flow
 * control then holds the client back) until the queue drains.
 */
import type { ServerDuplexStream } from "@grpc/grpc-js";
import { status as Status } from "@grpc/grpc-js";

import { InvalidRequestError } from "../worker/errors.js";
import type { SessionOp } from "../worker/operations.js";
import { callCancellation, type CallCancellation } from "./call-cancellation.js";
import { retryAfterMs, toGrpcFailure } from "./grpc-status.js";
import type { StreamRequestMessage, StreamResponseMessage } from "./messages.js";
import { decodeAppend, decodeGenerate, encodeAppended, encodeFinished, encodeToken } from "./op-codec.js";
import type { GatewayCallContext, SessionGateway } from "./session-gateway.js";

export interface StreamCallOptions {
  defaultMaxNewTokens: number;
  maxBacklog: number;
  onInternalError: (method: string, err: unknown) => void;
}

interface QueuedRequest {
  requestId: string;
  /** The decoded op, or why the request could not be decoded. */
  op: SessionOp | { invalid: unknown };
  controller: AbortController;
}

export class StreamCall {
  readonly #call: ServerDuplexStream<StreamRequestMessage, StreamResponseMessage>;
  readonly #gateway: SessionGateway;
  readonly #context: GatewayCallContext;
  readonly #options: StreamCallOptions;
  readonly #cancellation: CallCancellation;
  readonly #queue: QueuedRequest[] = [];
  #current: QueuedRequest | undefined;
  #draining = false;
  #paused = false;
  #inputEnded = false;
  #finished = false;

  constructor(
    call: ServerDuplexStream<StreamRequestMessage, StreamResponseMessage>,
    gateway: SessionGateway,
    context: GatewayCallContext,
    options: StreamCallOptions,
  ) {
    this.#call = call;
    this.#gateway = gateway;
    this.#context = context;
    this.#options = options;
    this.#cancellation = callCancellation(call);
    this.#cancellation.signal.addEventListener("abort", () => this.#abandon(), { once: true });
    call.on("data", (message: StreamRequestMessage) => this.#receive(message));
    call.on("end", () => {
      this.#inputEnded = true;
      this.#kick();
    });
    // A broken call (e.g. an undecodable message) ends the conversation.
    call.on("error", () => this.#abandon());
  }

  #receive(message: StreamRequestMessage): void {
    if (this.#finished) return;
    if (message.cancel) {
      this.#cancel(message.cancel.requestId ?? "");
      return;
    }
    let request: QueuedRequest;
    try {
      let op: SessionOp;
      if (message.append) op = decodeAppend(message.append);
      else if (message.generate) op = decodeGenerate(message.generate, this.#options.defaultMaxNewTokens);
      else throw new InvalidRequestError("a stream request needs one of append, generate or cancel");
      request = { requestId: op.requestId, op, controller: new AbortController() };
    } catch (err) {
      const requestId = message.append?.requestId ?? message.generate?.requestId ?? "";
      request = { requestId, op: { invalid: err }, controller: new AbortController() };
    }
    this.#queue.push(request);
    if (this.#queue.length >= this.#options.maxBacklog && !this.#paused) {
      this.#paused = true;
      this.#call.pause();
    }
    this.#kick();
  }

  #cancel(requestId: string): void {
    for (const request of [this.#current, ...this.#queue]) {
      if (request && request.requestId === requestId) request.controller.abort(new DOMException("cancelled by the client", "AbortError"));
    }
  }

  #kick(): void {
    if (this.#draining || this.#finished) return;
    this.#draining = true;
    void this.#drain();
  }

  async #drain(): Promise<void> {
    for (;;) {
      const request = this.#queue.shift();
      if (!request || this.#finished) break;
      if (this.#paused && this.#queue.length < this.#options.maxBacklog) {
        this.#paused = false;
        this.#call.resume();
      }
      this.#current = request;
      try {
        await this.#run(request);
      } catch (err) {
        this.#writeError(request.requestId, err);
      }
      this.#current = undefined;
    }
    this.#draining = false;
    if (this.#inputEnded && this.#queue.length === 0 && !this.#finished) {
      this.#finished = true;
      this.#cancellation.release();
      this.#call.end();
    }
  }

  async #run(request: QueuedRequest): Promise<void> {
    const op = request.op;
    if ("invalid" in op) throw op.invalid;
    await this.#gateway.execute(
      op,
      (event) => {
        switch (event.kind) {
          case "appended":
            this.#write({ requestId: event.requestId, append: encodeAppended(event) });
            break;
          case "token":
            this.#write({ requestId: event.requestId, token: encodeToken(event) });
            break;
          case "finished":
            this.#write({ requestId: event.requestId, finished: encodeFinished(event) });
            break;
          case "closed":
            break;
        }
      },
      request.controller.signal,
      this.#context,
    );
  }

  #write(response: StreamResponseMessage): void {
    if (!this.#finished) this.#call.write(response);
  }

  #writeError(requestId: string, err: unknown): void {
    const failure = toGrpcFailure(err);
    if (failure.code === Status.INTERNAL) this.#options.onInternalError("Stream", err);
    this.#write({ requestId, error: { code: failure.code, message: failure.details, retryAfterMs: retryAfterMs(failure) } });
  }

  /** The call is gone (cancelled, deadline, broken): stop the running request, drop the queued ones. */
  #abandon(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#cancellation.release();
    const reason = new DOMException("the call was cancelled", "AbortError");
    this.#current?.controller.abort(reason);
    for (const request of this.#queue.splice(0)) request.controller.abort(reason);
  }
}
