/**
 * Turns a grpc-js server call's cancellation into an AbortSignal for the
 * session gateway. grpc-js cancels a call when the client cancels it, when
 * its deadline passes (after answering DEADLINE_EXCEEDED itself) and on a
 * forced shutdown; in every case a Generate behind the signal stops decoding
 * after the token in flight.
 */
import type { EventEmitter } from "node:events";

/** What every kind of grpc-js server call has (unary, streaming, bidi). */
type ServerCall = Pick<EventEmitter, "once" | "removeListener"> & { readonly cancelled: boolean };

export interface CallCancellation {
  readonly signal: AbortSignal;
  /** Stops listening to the call; the signal no longer fires afterwards. */
  release(): void;
}

export function callCancellation(call: ServerCall): CallCancellation {
  const controller = new AbortController();
  const abort = (): void => controller.abort(new DOMException("the call was cancelled", "AbortError"));
  if (call.cancelled) abort();
  else call.once("cancelled", abort);
  return {
    signal: controller.signal,
    release: () => {
      call.removeListener("cancelled", abort);
    },
  };
}
