/**
 * The metrics sidecar as a real process (dist/services/metrics-sidecar/main.js)
 * on a free port, ready once it logs the port it bound; plus small HTTP helpers.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";

import { ROOT } from "../helpers/fixtures.js";
import { type Exposition, parseExposition } from "./prom-text.js";

export interface SidecarProcess {
  readonly url: string;
  readonly proc: ChildProcess;
  readonly logs: string[];
  /** GET /metrics, parsed (and so checked to be a valid exposition). */
  scrape(): Promise<Exposition>;
  health(): Promise<Record<string, unknown>>;
  stop(): Promise<number | null>;
}

export async function startSidecar(args: string[], env: Record<string, string> = {}): Promise<SidecarProcess> {
  const logs: string[] = [];
  const proc = spawn(process.execPath, [join(ROOT, "dist", "services", "metrics-sidecar", "main.js"), "--host", "127.0.0.1", "--port", "0", ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  proc.stdout!.on("data", (d: Buffer) => logs.push(d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let buffered = "";
    proc.stderr!.on("data", (d: Buffer) => {
      logs.push(d.toString());
      buffered += d.toString();
      for (const line of buffered.split("\n")) {
        if (!line.includes('"metrics sidecar serving"')) continue;
        resolve((JSON.parse(line) as { port: number }).port);
      }
    });
    void exited.then((code) => reject(new Error(`metrics sidecar exited with ${code} before serving:\n${logs.join("")}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    proc,
    logs,
    scrape: async () => {
      const res = await fetch(`${url}/metrics`);
      if (res.status !== 200) throw new Error(`sidecar /metrics answered ${res.status}`);
      return parseExposition(await res.text());
    },
    health: async () => {
      const res = await fetch(`${url}/healthz`);
      if (res.status !== 200) throw new Error(`sidecar /healthz answered ${res.status}`);
      return (await res.json()) as Record<string, unknown>;
    },
    stop: async () => {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      return exited;
    },
  };
}

/** Scrapes until `ready` holds for the exposition (a condition on the sidecar's state, not a timer). */
export async function scrapeUntil(sidecar: SidecarProcess, ready: (e: Exposition) => boolean, what: string, timeoutMs = 30_000): Promise<Exposition> {
  const deadline = Date.now() + timeoutMs;
  let last: Exposition | undefined;
  for (;;) {
    last = await sidecar.scrape();
    if (ready(last)) return last;
    if (Date.now() > deadline) {
      const lines = last.samples.filter((s) => !s.name.includes("process_") && !s.name.startsWith("nodejs")).map((s) => `${s.name}${JSON.stringify(s.labels)} ${s.value}`);
      throw new Error(`sidecar never showed ${what} within ${timeoutMs}ms; last scrape:\n${lines.join("\n")}\nlogs:\n${sidecar.logs.join("")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
