/**
 * TypeScript shapes of the streamsink.v1 messages as @grpc/proto-loader
 * hands them over with the options in proto.ts (camelCase fields, enums as
 * their names, 64-bit integers as numbers, defaults filled in, the name of
 * the set member in a virtual field per oneof).
 *
 * Requests have optional fields: a client may leave any out, and the server
 * must not trust any to be there. Responses have every field: the server
 * builds them whole and the loader fills defaults on the client side.
 */

export type PolicyName = "POLICY_UNSPECIFIED" | "POLICY_DENSE" | "POLICY_WINDOW" | "POLICY_RECOMPUTE" | "POLICY_SINKS";

export type FinishReasonName = "FINISH_REASON_UNSPECIFIED" | "FINISH_REASON_LENGTH" | "FINISH_REASON_STOP" | "FINISH_REASON_CANCELLED";

export interface SessionConfigMessage {
  policy?: PolicyName;
  sinks?: number;
  window?: number;
}

export interface InputMessage {
  text?: string;
  tokens?: { ids?: number[] } | null;
  /** The member of the `kind` oneof that is set (filled in by the loader on receipt). */
  kind?: "text" | "tokens";
}

export interface AppendRequestMessage {
  sessionId?: string;
  input?: InputMessage | null;
  returnLogprobs?: boolean;
  requestId?: string;
  config?: SessionConfigMessage | null;
}

export interface AppendResponseMessage {
  requestId: string;
  tokensAppended: number;
  tokenIds: number[];
  logprobs: number[];
  tokensSeen: number;
}

export interface SamplingMessage {
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
}

export interface GenerateRequestMessage {
  sessionId?: string;
  prompt?: InputMessage | null;
  sampling?: SamplingMessage | null;
  maxNewTokens?: number;
  stop?: string[];
  requestId?: string;
  config?: SessionConfigMessage | null;
}

export interface GeneratedTokenMessage {
  id: number;
  text: string;
  index: number;
}

export interface GenerateFinishedMessage {
  requestId: string;
  finishReason: FinishReasonName;
  promptTokens: number;
  generatedTokens: number;
  text: string;
}

export interface GenerateResponseMessage {
  token?: GeneratedTokenMessage | null;
  finished?: GenerateFinishedMessage | null;
  event?: "token" | "finished";
}

export interface StreamRequestMessage {
  append?: AppendRequestMessage | null;
  generate?: GenerateRequestMessage | null;
  cancel?: { requestId?: string } | null;
  request?: "append" | "generate" | "cancel";
}

export interface RequestErrorMessage {
  /** A gRPC status code. */
  code: number;
  message: string;
  retryAfterMs: number;
}

export interface StreamResponseMessage {
  requestId: string;
  append?: AppendResponseMessage | null;
  token?: GeneratedTokenMessage | null;
  finished?: GenerateFinishedMessage | null;
  error?: RequestErrorMessage | null;
  result?: "append" | "token" | "finished" | "error";
}

export interface GetSessionRequestMessage {
  sessionId?: string;
}

export interface SessionInfoMessage {
  sessionId: string;
  tokensSeen: number;
  cacheFill: number;
  capacity: number;
  sinks: number;
  window: number;
  policy: PolicyName;
  owner: string;
  servedBy: string;
}

export interface CloseSessionRequestMessage {
  sessionId?: string;
  requestId?: string;
}

export interface CloseSessionResponseMessage {
  requestId: string;
  existed: boolean;
}
