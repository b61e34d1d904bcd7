/**
 * Session operations and the events they produce. Every way into a session
 * (gRPC, Kafka records, the in-process log) is turned into a SessionOp; the
 * worker runs ops per session in order and reports SessionEvents, which the
 * gRPC layer streams back and the Kafka layer writes to the output topic.
 */
import type { Policy } from "../engine/index.js";

export interface SessionConfig {
  policy?: Policy;
  sinks?: number;
  window?: number;
}

/** Text or token ids; exactly one. */
export interface OpInput {
  text?: string;
  tokens?: number[];
}

export interface SamplingParams {
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
}

interface OpBase {
  session: string;
  /**
   * Input-topic offset of the record this op came from (Kafka mode). The host
   * records it as the session's applied offset when the op's effects are
   * complete, so a snapshot says exactly which records it contains.
   */
  logOffset?: string;
  /** The op comes from the input log: it must not be refused for queue room (backpressure pauses the log instead). */
  fromLog?: boolean;
  /** Unique per request; used to match results and to recognise duplicates. */
  requestId: string;
  /** Applied when this op creates the session. */
  config?: SessionConfig;
}

export interface AppendOp extends OpBase {
  kind: "append";
  input: OpInput;
  logprobs?: boolean;
}

export interface GenerateOp extends OpBase {
  kind: "generate";
  prompt?: OpInput;
  sampling?: SamplingParams;
  maxNewTokens: number;
  /** Text sequences that end the generation (not included in the output text). */
  stop?: string[];
  /**
   * Replay after a failover: the tokens this generation already produced, as
   * recorded on the output topic by the earlier owner. They are appended as
   * they are, never sampled again; sampling goes on after them.
   */
  recorded?: number[];
}

export interface CloseOp extends OpBase {
  kind: "close";
}

export type SessionOp = AppendOp | GenerateOp | CloseOp;

export type FinishReason = "length" | "stop" | "cancelled";

export type SessionEvent =
  | { kind: "appended"; session: string; requestId: string; tokens: number[]; logprobs?: number[]; tokensSeen: number }
  | { kind: "token"; session: string; requestId: string; index: number; token: number; text: string }
  | {
      kind: "finished";
      session: string;
      requestId: string;
      reason: FinishReason;
      promptTokens: number;
      generatedTokens: number;
      text: string;
    }
  | { kind: "closed"; session: string; requestId: string; existed: boolean };
