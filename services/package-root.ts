/**
 * The streamsink package root (the directory whose package.json is named
 * "streamsink"), found from this file whether it runs from services/ (tests)
 * or dist/services/ (built). Assets beside the code (the addon, proto/, Lua
 * scripts, bundled models) are located from it.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

let cached: string | undefined;

export function packageRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest)) {
      const parsed = JSON.parse(readFileSync(manifest, "utf8")) as { name?: string };
      if (parsed.name === "streamsink") return (cached = dir);
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error("cannot locate the streamsink package root");
    dir = parent;
  }
}
