/**
 * streamsink.v1 messages <-> session operations and events. Decoding checks
 * what only the wire format can get wrong (missing fields, both oneof
 * members set, unknown enum values, id lengths) and throws
 * InvalidRequestError; limits that depend on the model or the worker
 * (vocabulary, input and generation sizes, sampling ranges) are checked where
 * the op runs, by the SessionHost.
 */
import { randomUUID } from "node:crypto";

import type { Policy } from "../engine/index.js";
import { InvalidRequestError } from "../worker/errors.js";
import type { AppendOp, CloseOp, FinishReason, GenerateOp, OpInput, SamplingParams, SessionConfig, SessionEvent } from "../worker/operations.js";
import type {
  AppendRequestMessage,
  AppendResponseMessage,
  CloseSessionRequestMessage,
  CloseSessionResponseMessage,
  FinishReasonName,
  GeneratedTokenMessage,
  GenerateFinishedMessage,
  GenerateRequestMessage,
  InputMessage,
  PolicyName,
  SamplingMessage,
  SessionConfigMessage,
  SessionInfoMessage,
} from "./messages.js";
import type { GatewaySessionInfo } from "./session-gateway.js";

export const MAX_SESSION_ID_LENGTH = 256;
export const MAX_REQUEST_ID_LENGTH = 128;

const POLICY_FROM_WIRE: Record<PolicyName, Policy | undefined> = {
  POLICY_UNSPECIFIED: undefined,
  POLICY_DENSE: "dense",
  POLICY_WINDOW: "window",
  POLICY_RECOMPUTE: "recompute",
  POLICY_SINKS: "sinks",
};

const POLICY_TO_WIRE: Record<Policy, PolicyName> = {
  dense: "POLICY_DENSE",
  window: "POLICY_WINDOW",
  recompute: "POLICY_RECOMPUTE",
  sinks: "POLICY_SINKS",
};

const FINISH_TO_WIRE: Record<FinishReason, FinishReasonName> = {
  length: "FINISH_REASON_LENGTH",
  stop: "FINISH_REASON_STOP",
  cancelled: "FINISH_REASON_CANCELLED",
};

/** The wire name of a policy. */
export function policyToWire(policy: Policy): PolicyName {
  return POLICY_TO_WIRE[policy];
}

/** A policy from the wire; undefined for POLICY_UNSPECIFIED. Throws InvalidRequestError for an unknown value. */
export function policyFromWire(name: PolicyName | undefined, field: string): Policy | undefined {
  const key = name ?? "POLICY_UNSPECIFIED";
  if (!Object.hasOwn(POLICY_FROM_WIRE, key)) throw new InvalidRequestError(`${field}: unknown policy ${String(key)}`);
  return POLICY_FROM_WIRE[key];
}

/** A finish reason from the wire; undefined for one this code does not know. */
export function finishReasonFromWire(name: FinishReasonName): FinishReason | undefined {
  return (Object.keys(FINISH_TO_WIRE) as FinishReason[]).find((reason) => FINISH_TO_WIRE[reason] === name);
}

export function encodeConfig(config: SessionConfig): SessionConfigMessage {
  return {
    policy: config.policy !== undefined ? POLICY_TO_WIRE[config.policy] : "POLICY_UNSPECIFIED",
    ...(config.sinks !== undefined ? { sinks: config.sinks } : {}),
    ...(config.window !== undefined ? { window: config.window } : {}),
  };
}

export function decodeSessionId(value: string | undefined): string {
  if (!value) throw new InvalidRequestError("session_id is required");
  if (value.length > MAX_SESSION_ID_LENGTH) throw new InvalidRequestError(`session_id is longer than ${MAX_SESSION_ID_LENGTH} characters`);
  return value;
}

/** The client's request id, or a fresh UUID when it sent none. */
export function decodeRequestId(value: string | undefined): string {
  if (!value) return randomUUID();
  if (value.length > MAX_REQUEST_ID_LENGTH) throw new InvalidRequestError(`request_id is longer than ${MAX_REQUEST_ID_LENGTH} characters`);
  return value;
}

function decodeInput(input: InputMessage | null | undefined, field: string): OpInput | undefined {
  if (!input) return undefined;
  const hasText = typeof input.text === "string";
  const hasTokens = input.tokens !== undefined && input.tokens !== null;
  if (hasText && hasTokens) throw new InvalidRequestError(`${field}: set text or token ids, not both`);
  if (hasText) return { text: input.text! };
  if (hasTokens) return { tokens: input.tokens!.ids ?? [] };
  return undefined;
}

function decodeConfig(config: SessionConfigMessage | null | undefined): SessionConfig | undefined {
  if (!config) return undefined;
  const policy = policyFromWire(config.policy, "config.policy");
  return {
    ...(policy !== undefined ? { policy } : {}),
    ...(config.sinks !== undefined ? { sinks: config.sinks } : {}),
    ...(config.window !== undefined ? { window: config.window } : {}),
  };
}

function decodeSampling(sampling: SamplingMessage | null | undefined): SamplingParams | undefined {
  if (!sampling) return undefined;
  return {
    temperature: sampling.temperature ?? 0,
    topK: sampling.topK ?? 0,
    seed: sampling.seed ?? 0,
    ...(sampling.topP !== undefined ? { topP: sampling.topP } : {}),
  };
}

export function decodeAppend(message: AppendRequestMessage): AppendOp {
  const session = decodeSessionId(message.sessionId);
  const requestId = decodeRequestId(message.requestId);
  const input = decodeInput(message.input, "input");
  if (!input) throw new InvalidRequestError("input is required: text or token ids");
  const config = decodeConfig(message.config);
  return { kind: "append", session, requestId, input, logprobs: message.returnLogprobs ?? false, ...(config ? { config } : {}) };
}

export function decodeGenerate(message: GenerateRequestMessage, defaultMaxNewTokens: number): GenerateOp {
  const session = decodeSessionId(message.sessionId);
  const requestId = decodeRequestId(message.requestId);
  const prompt = decodeInput(message.prompt, "prompt");
  const sampling = decodeSampling(message.sampling);
  const config = decodeConfig(message.config);
  return {
    kind: "generate",
    session,
    requestId,
    maxNewTokens: message.maxNewTokens ?? defaultMaxNewTokens,
    stop: message.stop ?? [],
    ...(prompt ? { prompt } : {}),
    ...(sampling ? { sampling } : {}),
    ...(config ? { config } : {}),
  };
}

export function decodeClose(message: CloseSessionRequestMessage): CloseOp {
  return { kind: "close", session: decodeSessionId(message.sessionId), requestId: decodeRequestId(message.requestId) };
}

type EventOf<K extends SessionEvent["kind"]> = Extract<SessionEvent, { kind: K }>;

export function encodeAppended(event: EventOf<"appended">): AppendResponseMessage {
  return {
    requestId: event.requestId,
    tokensAppended: event.tokens.length,
    tokenIds: event.tokens,
    logprobs: event.logprobs ?? [],
    tokensSeen: event.tokensSeen,
  };
}

export function encodeToken(event: EventOf<"token">): GeneratedTokenMessage {
  return { id: event.token, text: event.text, index: event.index };
}

export function encodeFinished(event: EventOf<"finished">): GenerateFinishedMessage {
  return {
    requestId: event.requestId,
    finishReason: FINISH_TO_WIRE[event.reason],
    promptTokens: event.promptTokens,
    generatedTokens: event.generatedTokens,
    text: event.text,
  };
}

export function encodeClosed(event: EventOf<"closed">): CloseSessionResponseMessage {
  return { requestId: event.requestId, existed: event.existed };
}

export function encodeSessionInfo(info: GatewaySessionInfo, servedBy: string): SessionInfoMessage {
  return {
    sessionId: info.session,
    tokensSeen: info.tokensSeen,
    cacheFill: info.cacheFill,
    capacity: info.capacity,
    sinks: info.sinks,
    window: info.window,
    policy: policyToWire(info.policy),
    owner: info.owner,
    servedBy,
  };
}
