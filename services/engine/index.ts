export { Engine, POLICIES, type EngineOptions, type ModelInfo, type Policy, type SessionOptions, type NextToken, type StepRequest, type StepResult } from "./engine.js";
export * from "./errors.js";
export { Sampler, argmax, type SamplingOptions } from "./sampler.js";
export { Session, type AppendResult, type FinishReason, type GenerateOptions, type GenerateResult, type SessionDelta, type SessionInfo } from "./session.js";
export { TextTokenizer } from "./tokenizer.js";
