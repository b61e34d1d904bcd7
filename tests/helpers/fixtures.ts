import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const FIXTURES = join(ROOT, "tests", "fixtures");
export const MODEL_NAMES = ["llama-gqa", "pythia", "falcon-mq", "falcon-nda", "mpt"] as const;
export type ModelName = (typeof MODEL_NAMES)[number];

export function modelDir(name: ModelName): string {
  return join(FIXTURES, "models", name);
}

export interface GoldenCase {
  policy: "dense" | "sinks" | "window" | "recompute";
  sinks: number;
  window: number;
  ids: number[];
  logprobs: number[];
}

export interface Golden {
  format: string;
  version: number;
  model: string;
  architecture: string;
  dtype: string;
  cases: GoldenCase[];
}

export function loadGolden(name: ModelName): Golden {
  const g = JSON.parse(readFileSync(join(FIXTURES, "golden", `${name}.json`), "utf8")) as Golden;
  if (g.format !== "streamsink-golden" || g.version !== 1) throw new Error(`unexpected golden format in ${name}.json`);
  return g;
}
