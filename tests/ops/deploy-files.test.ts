// The files under deploy/ that no engine here can run (no Docker): the
// Dockerfiles read as instruction lists, the compose file, the Prometheus
// config and the Grafana dashboard parsed and checked against each other and
// against the metrics the worker and the sidecar actually export.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

import { describe, expect, it } from "vitest";
import { parse } from "yaml";

import { MetricsSidecar } from "../../services/metrics-sidecar/metrics-sidecar.js";
import { createLogger } from "../../services/worker/logger.js";
import { WorkerMetrics } from "../../services/worker/metrics.js";
import { ROOT } from "../helpers/fixtures.js";

const DEPLOY = join(ROOT, "deploy");

interface Instruction {
  op: string;
  args: string;
}

/** Dockerfile instructions, continuation lines joined, comments and parser directives dropped. */
function instructions(file: string): Instruction[] {
  const joined = readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => !/^\s*#/.test(l))
    .join("\n")
    .replace(/\\\n/g, " ");
  return joined
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => {
      const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(l);
      if (!m) throw new Error(`${file}: not an instruction: ${l}`);
      return { op: m[1]!.toUpperCase(), args: m[2]!.trim() };
    });
}

interface Stage {
  base: string;
  name: string | undefined;
  body: Instruction[];
}

function stages(file: string): Stage[] {
  const all = instructions(file);
  const args = new Map<string, string>();
  for (const i of all) {
    if (i.op === "FROM") break;
    if (i.op === "ARG") {
      const [k, v] = i.args.split("=");
      args.set(k!, v ?? "");
    }
  }
  const expand = (s: string) => s.replace(/\$\{(\w+)\}/g, (_, k: string) => args.get(k) ?? `\${${k}}`);
  const out: Stage[] = [];
  for (const i of all) {
    if (i.op === "FROM") {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args);
      out.push({ base: expand(m![1]!), name: m![2], body: [] });
    } else if (out.length > 0) {
      out[out.length - 1]!.body.push(i);
    }
  }
  return out;
}

describe("Dockerfiles", () => {
  for (const [file, runtimeBase] of [
    ["worker.Dockerfile", /^nvidia\/cuda:[\d.]+-runtime-ubuntu[\d.]+$/],
    ["sidecar.Dockerfile", /^node:\d+-bookworm-slim$/],
  ] as const) {
    describe(file, () => {
      const path = join(DEPLOY, file);
      const st = stages(path);
      const final = st[st.length - 1]!;

      it("is multi-stage, with pinned bases and a final stage on the expected runtime image", () => {
        expect(st.length).toBeGreaterThanOrEqual(2);
        for (const s of st) {
          expect(s.base).toMatch(/:[^:]+$/);
          expect(s.base).not.toMatch(/:latest$/);
        }
        expect(final.base).toMatch(runtimeBase);
        expect(final.body.some((i) => i.op === "COPY" && i.args.startsWith("--from=build"))).toBe(true);
      });

      it("runs as a numeric non-root user and starts the right program", () => {
        const users = final.body.filter((i) => i.op === "USER").map((i) => i.args);
        expect(users).toHaveLength(1);
        expect(users[0]).toMatch(/^[1-9]\d*:[1-9]\d*$/);
        const entry = final.body.find((i) => i.op === "ENTRYPOINT")!;
        const program = (JSON.parse(entry.args) as string[]).at(-1)!;
        expect(program).toMatch(/^\/app\/dist\/services\/.+\.js$/);
        // The program is compiled from a source this repository has.
        expect(existsSync(join(ROOT, program.replace("/app/dist/", "").replace(/\.js$/, ".ts")))).toBe(true);
        expect(final.body.some((i) => i.op === "HEALTHCHECK")).toBe(true);
      });

      it("copies only what exists, from stages that exist", () => {
        const names = new Set(st.map((s) => s.name).filter(Boolean));
        for (const s of st) {
          for (const i of s.body.filter((x) => x.op === "COPY")) {
            const parts = i.args.split(/\s+/);
            const from = parts.find((p) => p.startsWith("--from="))?.slice("--from=".length);
            if (from) {
              expect(names.has(from), `stage ${from}`).toBe(true);
              continue;
            }
            for (const src of parts.filter((p) => !p.startsWith("--")).slice(0, -1)) expect(existsSync(join(ROOT, src)), src).toBe(true);
          }
        }
        expect(existsSync(`${path}.dockerignore`)).toBe(true);
      });

      it("runs no build step as the unprivileged user", () => {
        const userAt = final.body.findIndex((i) => i.op === "USER");
        expect(final.body.slice(userAt).filter((i) => i.op === "RUN")).toEqual([]);
      });
    });
  }

  it("builds the engine with the CUDA toolkit in the worker's build stage", () => {
    const build = stages(join(DEPLOY, "worker.Dockerfile")).find((s) => s.name === "build")!;
    expect(build.base).toMatch(/^nvidia\/cuda:[\d.]+-devel-/);
    const cmake = build.body.find((i) => i.op === "RUN" && i.args.includes("cmake-js compile"))!;
    expect(cmake.args).toContain("--CDSTREAMSINK_CUDA=ON");
  });
});

describe("docker-compose.yml", () => {
  const compose = parse(readFileSync(join(DEPLOY, "docker-compose.yml"), "utf8"), { merge: true }) as { services: Record<string, any> };
  const s = compose.services;

  it("runs Kafka, Redis, two workers with sidecars, Prometheus and Grafana", () => {
    expect(Object.keys(s).sort()).toEqual(["grafana", "kafka", "prometheus", "redis", "sidecar-1", "sidecar-2", "worker-1", "worker-2"]);
  });

  it("runs workers and sidecars read-only without capabilities, each sidecar in its worker's network namespace", () => {
    for (const n of [1, 2]) {
      for (const name of [`worker-${n}`, `sidecar-${n}`]) {
        expect(s[name].read_only).toBe(true);
        expect(s[name].cap_drop).toEqual(["ALL"]);
      }
      expect(s[`sidecar-${n}`].network_mode).toBe(`service:worker-${n}`);
      expect(s[`worker-${n}`].environment.STREAMSINK_ADVERTISE_ADDRESS).toBe(`worker-${n}:50051`);
      expect(s[`worker-${n}`].build.dockerfile).toBe("deploy/worker.Dockerfile");
      expect(s[`sidecar-${n}`].build.dockerfile).toBe("deploy/sidecar.Dockerfile");
    }
  });

  it("mounts files that exist", () => {
    for (const svc of Object.values(s)) {
      for (const v of (svc.volumes ?? []) as string[]) expect(existsSync(join(DEPLOY, v.split(":")[0]!)), v).toBe(true);
    }
  });

  it("has Prometheus scrape every sidecar on the port it listens on", () => {
    const prom = parse(readFileSync(join(DEPLOY, "prometheus", "prometheus.yml"), "utf8")) as {
      scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[] }> }>;
    };
    const targets = prom.scrape_configs.find((c) => c.job_name === "streamsink")!.static_configs.flatMap((c) => c.targets);
    const port = s["sidecar-1"].command[s["sidecar-1"].command.indexOf("--port") + 1];
    expect(targets).toEqual([`worker-1:${port}`, `worker-2:${port}`]);
  });
});

describe("Grafana dashboard", () => {
  const dashboard = JSON.parse(readFileSync(join(DEPLOY, "grafana", "dashboards", "streamsink.json"), "utf8")) as any;
  const panels = dashboard.panels as any[];
  const exprs: string[] = panels.flatMap((p) => (p.targets ?? []).map((t: { expr: string }) => t.expr));

  it("queries only metrics the worker or the sidecar export", async () => {
    const sidecar = new MetricsSidecar(
      {
        host: "127.0.0.1",
        port: 0,
        workerMetricsUrl: "http://127.0.0.1:1/metrics",
        workerTimeoutMs: 100,
        nvidiaSmi: undefined,
        gpuTimeoutMs: 100,
        kafka: { brokers: ["127.0.0.1:1"], group: "g", topic: "t", intervalMs: 1000, ssl: false, sasl: undefined },
      },
      createLogger("error"),
    );
    const exported = new Set<string>();
    for (const m of [...(await new WorkerMetrics().registry.getMetricsAsJSON()), ...(await sidecar.registry.getMetricsAsJSON())]) {
      exported.add(m.name);
      if (String(m.type) === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) exported.add(m.name + suffix);
    }
    const used = new Set(exprs.flatMap((e) => [...e.matchAll(/\bstreamsink_[a-z0-9_]+/g)].map((m) => m[0])));
    expect(used.size).toBeGreaterThan(25);
    expect([...used].filter((n) => !exported.has(n))).toEqual([]);
  });

  it("covers throughput, latency, sessions, cache, snapshots, lag and GPU", () => {
    const rows = panels.filter((p) => p.type === "row").map((p) => p.title);
    expect(rows).toEqual(["Throughput", "Latency", "Sessions and cache", "Snapshots", "Kafka", "GPU", "Health"]);
    expect(exprs.filter((e) => e.startsWith("histogram_quantile(0.99")).length).toBeGreaterThanOrEqual(3);
  });

  it("lays out panels with unique ids inside the 24-column grid, on the provisioned data source", () => {
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
    const ds = parse(readFileSync(join(DEPLOY, "grafana", "provisioning", "datasources", "prometheus.yml"), "utf8")) as { datasources: Array<{ type: string }> };
    expect(ds.datasources[0]!.type).toBe("prometheus");
    expect(dashboard.templating.list[0]).toMatchObject({ name: "datasource", type: "datasource", query: "prometheus" });
  });
});
