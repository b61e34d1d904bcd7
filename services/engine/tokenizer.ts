/**
 * Text <-> token ids with the model directory's tokenizer.json, through
 * Hugging Face's maintained pure-JS tokenizer library. Streams are encoded
 * without special tokens: a session is one never-ending text, and the model's
 * learned sink token (if any) is added by the engine, not here.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { Tokenizer } from "@huggingface/tokenizers";

import { ModelLoadError } from "./errors.js";

export class TextTokenizer {
  readonly #tokenizer: Tokenizer;

  private constructor(tokenizer: Tokenizer) {
    this.#tokenizer = tokenizer;
  }

  /** Loads `<dir>/tokenizer.json` (and tokenizer_config.json when present). */
  static async load(modelDir: string): Promise<TextTokenizer> {
    const path = join(modelDir, "tokenizer.json");
    let json: unknown;
    try {
      json = JSON.parse(await readFile(path, "utf8"));
    } catch (cause) {
      throw new ModelLoadError("E_TOKENIZER", `cannot read ${path}: ${(cause as Error).message}`, { cause });
    }
    let config: unknown = {};
    try {
      config = JSON.parse(await readFile(join(modelDir, "tokenizer_config.json"), "utf8"));
    } catch {
      // tokenizer_config.json is optional.
    }
    try {
      return new TextTokenizer(new Tokenizer(json as object, config as object));
    } catch (cause) {
      throw new ModelLoadError("E_TOKENIZER", `invalid tokenizer in ${path}: ${(cause as Error).message}`, { cause });
    }
  }

  encode(text: string): number[] {
    return this.#tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: readonly number[]): string {
    return this.#tokenizer.decode([...ids], { skip_special_tokens: false });
  }

  tokenToId(token: string): number | undefined {
    return this.#tokenizer.token_to_id(token);
  }
}
