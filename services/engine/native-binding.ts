/**
 * The one typed boundary to the native addon (native/src/addon.cpp). Every
 * symbol the addon exports is declared here; the rest of the code base uses
 * the public Engine/Session classes, never these Native* types directly.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

import { packageRoot } from "../package-root.js";

export type NativePolicy = "dense" | "window" | "recompute" | "sinks";

export interface NativeModelInfo {
  architecture: string;
  vocabSize: number;
  hiddenSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  maxPositions: number;
  positionEncoding: "rotary" | "alibi";
  parameters: number;
  modelHash: string;
  /** Learned sink token from config.json (`streamsink.sink_token_id`), or -1. */
  sinkTokenId: number;
  backend: "cpu" | "cuda";
  /** CUDA backend: the device's name and the weight/cache dtype. */
  device?: string;
  dtype?: "bf16" | "fp16" | "fp32";
  threads: number;
}

export interface NativeSessionOptions {
  policy: NativePolicy;
  sinks?: number;
  window?: number;
  /** Token prepended to the session (learned sink); -1 or absent for none. */
  sinkToken?: number;
  maxDenseTokens?: number;
}

export interface NativeSessionInfo {
  policy: NativePolicy;
  sinks: number;
  window: number;
  cacheFill: number;
  capacity: number;
  tokensSeen: number;
  sinkToken: number;
}

export interface NativeStepEntry {
  session: number;
  tokens: Int32Array;
  logprobs: boolean;
  /** false: return the next token only, not its distribution (absent: true). */
  nextDistribution?: boolean;
}

export interface NativeStepOutput {
  /** Present when the entry asked for log-probs; NaN for a session's first token. */
  tokenLogprobs?: Float32Array;
  /** Log-softmax after the entry's last token, when `returnNext` and `nextDistribution` were set. */
  nextLogprobs?: Float32Array;
  /** Its most likely token (ties: the lowest id) and that token's log-prob; absent before the first token. */
  nextToken?: number;
  nextTokenLogprob?: number;
}

export interface NativeModel {
  info(): NativeModelInfo;
  openSession(options: NativeSessionOptions): number;
  closeSession(session: number): void;
  sessionInfo(session: number): NativeSessionInfo;
  step(entries: NativeStepEntry[], returnNext: boolean): Promise<NativeStepOutput[]>;
  exportSession(session: number): Buffer;
  /** What changed since the cache held `fromTokens` tokens (engine.h, export_session_since). */
  exportSessionSince(session: number, fromTokens: number): Buffer;
  importSession(bytes: Uint8Array): number;
  dispose(): void;
}

export interface NativeBackendInfo {
  cudaCompiled: boolean;
  cudaDevices: number;
}

export interface NativeAddon {
  loadModel(
    dir: string,
    options: { threads?: number; backend?: "cpu" | "cuda" | "auto"; dtype?: "bf16" | "fp16" | "fp32"; device?: number },
  ): Promise<NativeModel>;
  backendInfo(): NativeBackendInfo;
}


let cached: NativeAddon | undefined;

/** Loads the addon built at install time (or the path in STREAMSINK_ADDON). */
export function nativeAddon(): NativeAddon {
  if (cached) return cached;
  const path = process.env.STREAMSINK_ADDON ?? join(packageRoot(), "native", "build", "Release", "streamsink.node");
  if (!existsSync(path)) {
    throw new Error(`native addon not found at ${path}: run "npm run build:native" (needs cmake and a C++17 compiler)`);
  }
  const require = createRequire(import.meta.url);
  cached = require(path) as NativeAddon;
  return cached;
}
