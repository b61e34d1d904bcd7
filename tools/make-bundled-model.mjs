#!/usr/bin/env node
// Regenerates models/tiny-llama: a small Llama-architecture checkpoint with
// seeded random weights (bf16) and the fixtures' byte-level BPE tokenizer.
// It stands in for the trained reference models (tools/train) until those
// ship; run `npm run build` first.
import { copyFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { writeRandomLlama } from "../dist/services/cli/random-model.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "models", "tiny-llama");
await writeRandomLlama(out, { hidden: 128, layers: 4, heads: 4, kvHeads: 2, intermediate: 352, vocab: 384 }, 2024, "BF16");
copyFileSync(join(root, "tests", "fixtures", "models", "llama-gqa", "tokenizer.json"), join(out, "tokenizer.json"));
console.log(`wrote ${out}`);
