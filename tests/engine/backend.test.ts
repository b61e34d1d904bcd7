/**
 * Backend selection on a machine without a GPU (CI): `auto` runs the CPU
 * backend, `cuda` is refused with a reason, and a bad CUDA dtype is rejected
 * before anything loads. The CUDA backend itself is tested on the GPU host
 * (tools/cuda/device-check.sh; results in bench/results/gpu/).
 */
import { describe, expect, it } from "vitest";

import { BackendUnavailableError, Engine, InvalidArgumentError } from "../../services/engine/index.js";
import { nativeAddon } from "../../services/engine/native-binding.js";
import { modelDir } from "../helpers/fixtures.js";

const info = nativeAddon().backendInfo();

describe("backend selection", () => {
  it("reports whether this build has CUDA and sees a device", () => {
    expect(typeof info.cudaCompiled).toBe("boolean");
    expect(info.cudaDevices).toBeGreaterThanOrEqual(0);
  });

  it("auto picks the CPU when no CUDA device is visible", async () => {
    const engine = await Engine.load(modelDir("llama-gqa"), { backend: "auto" });
    try {
      expect(engine.info.backend).toBe(info.cudaDevices > 0 ? "cuda" : "cpu");
      if (engine.info.backend === "cpu") {
        expect(engine.info.device).toBeUndefined();
        expect(engine.info.dtype).toBeUndefined();
      }
    } finally {
      await engine.close();
    }
  });

  it("refuses cuda with the reason when it cannot run", async () => {
    if (info.cudaDevices > 0) return; // a GPU host runs the device checks instead
    const err = await Engine.load(modelDir("llama-gqa"), { backend: "cuda" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailableError);
    expect((err as Error).message).toMatch(info.cudaCompiled ? /no CUDA device is visible/ : /no CUDA backend/);
  });

  it("rejects an unknown dtype whatever the backend", async () => {
    const err = await Engine.load(modelDir("llama-gqa"), { backend: "cpu", dtype: "int8" as never }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toMatch(/dtype must be bf16, fp16 or fp32, got "int8"/);
  });
});
