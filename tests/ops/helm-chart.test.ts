// Chart unit tests: `helm template` with chosen values, the YAML parsed and
// asserted on. The tools come from tools/helm/install.sh (.ci/run installs
// them; a missing tool fails here with the command that installs it).
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";

import { sidecarUsage } from "../../services/metrics-sidecar/sidecar-config.js";
import { serveUsage } from "../../services/worker/config.js";
import { ROOT } from "../helpers/fixtures.js";

const CHART = join(ROOT, "helm", "streamsink");
const KUBE_VERSION = "1.30.0";
const tmp = mkdtempSync(join(tmpdir(), "streamsink-chart-test-"));
let tools: Record<string, string>;

// Rendered objects are untyped YAML; tests reach into them by path.
type K8sObject = Record<string, any>;

beforeAll(() => {
  const r = spawnSync("bash", [join(ROOT, "tools", "helm", "install.sh"), "--no-install"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`chart tools are not installed: ${r.stderr.trim()}`);
  tools = Object.fromEntries(r.stdout.trim().split("\n").map((l) => l.split("=", 2) as [string, string]));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let valuesFiles = 0;
function valuesArgs(values: object | undefined): string[] {
  if (!values) return [];
  const file = join(tmp, `values-${valuesFiles++}.json`);
  writeFileSync(file, JSON.stringify(values));
  return ["-f", file];
}

function helm(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(tools.HELM!, args, { encoding: "utf8" });
}

/** Renders the chart; fails the test with helm's message when rendering fails. */
function render(values?: object, extraFiles: string[] = []): K8sObject[] {
  const r = helm(["template", "rel", CHART, "--namespace", "ns", "--kube-version", KUBE_VERSION, ...extraFiles.flatMap((f) => ["-f", f]), ...valuesArgs(values)]);
  if (r.status !== 0) throw new Error(`helm template failed:\n${r.stderr}`);
  return parseAllDocuments(r.stdout)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

/** The error helm gives for these values (the render must fail). */
function renderError(values: object): string {
  const r = helm(["template", "rel", CHART, "--kube-version", KUBE_VERSION, ...valuesArgs(values)]);
  expect(r.status, "rendering should have failed").not.toBe(0);
  return r.stderr;
}

const kinds = (objs: K8sObject[]) => objs.map((o) => o.kind as string).sort();
const one = (objs: K8sObject[], kind: string): K8sObject => {
  const found = objs.filter((o) => o.kind === kind);
  expect(found, `exactly one ${kind}`).toHaveLength(1);
  return found[0]!;
};
const container = (objs: K8sObject[], name: string): K8sObject | undefined =>
  (one(objs, "Deployment").spec.template.spec.containers as K8sObject[]).find((c) => c.name === name);
const envOf = (c: K8sObject, name: string): K8sObject | undefined => (c.env as K8sObject[] | undefined)?.find((e) => e.name === name);

const CLUSTER = { kafka: { brokers: ["kafka:9092"] } };

describe("helm chart: defaults", () => {
  it("renders one embedded GPU worker with its sidecar, Services, ConfigMap, ServiceAccount and PDB", () => {
    const objs = render();
    expect(kinds(objs)).toEqual(["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service", "ServiceAccount"]);
    for (const o of objs) {
      expect(o.metadata.name.length).toBeLessThanOrEqual(63);
      expect(o.metadata.namespace).toBe("ns");
      expect(o.metadata.labels).toMatchObject({
        "app.kubernetes.io/name": "streamsink",
        "app.kubernetes.io/instance": "rel",
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/version": "0.1.0",
        "helm.sh/chart": "streamsink-0.1.0",
      });
    }
    expect(one(objs, "Deployment").spec.replicas).toBe(1);
    expect(container(objs, "worker")!.image).toBe("streamsink/worker:0.1.0");
    expect(container(objs, "metrics-sidecar")!.image).toBe("streamsink/metrics-sidecar:0.1.0");
  });

  it("truncates long names to 63 characters without a trailing dash", () => {
    const objs = render({ fullnameOverride: `${"x".repeat(61)}-abc` });
    for (const o of objs) {
      expect(o.metadata.name.length).toBeLessThanOrEqual(63);
      expect(o.metadata.name).not.toMatch(/-$/);
    }
    const services = objs.filter((o) => o.kind === "Service").map((o) => o.metadata.name);
    expect(new Set(services).size).toBe(2);
  });
});

describe("helm chart: the worker pod", () => {
  it("puts the GPU request on the worker container only, with the configured resource name and count", () => {
    let objs = render({ worker: { gpu: { enabled: true, resourceName: "nvidia.com/mig-1g.10gb", count: 2 } } });
    expect(container(objs, "worker")!.resources.limits).toMatchObject({ "nvidia.com/mig-1g.10gb": 2, memory: "16Gi" });
    expect(container(objs, "metrics-sidecar")!.resources.limits).not.toHaveProperty("nvidia.com/mig-1g.10gb");
    objs = render({ worker: { gpu: { enabled: false } } });
    expect(Object.keys(container(objs, "worker")!.resources.limits)).toEqual(["memory"]);
  });

  it("schedules onto GPU nodes: runtimeClassName, tolerations, node selector, spread", () => {
    const toleration = { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" };
    const spec = one(
      render({
        worker: {
          runtimeClassName: "nvidia",
          tolerations: [toleration],
          nodeSelector: { "nvidia.com/gpu.present": "true" },
          topologySpreadConstraints: [{ maxSkew: 1, topologyKey: "kubernetes.io/hostname", whenUnsatisfiable: "ScheduleAnyway" }],
        },
      }),
      "Deployment",
    ).spec.template.spec;
    expect(spec.runtimeClassName).toBe("nvidia");
    expect(spec.tolerations).toEqual([toleration]);
    expect(spec.nodeSelector).toEqual({ "nvidia.com/gpu.present": "true" });
    expect(spec.topologySpreadConstraints[0].labelSelector.matchLabels).toEqual({
      "app.kubernetes.io/name": "streamsink",
      "app.kubernetes.io/instance": "rel",
      "app.kubernetes.io/component": "worker",
    });
  });

  it("gives the worker time to hand its sessions over", () => {
    const objs = render({ worker: { terminationGracePeriodSeconds: 300, preStopSleepSeconds: 7 } });
    const pod = one(objs, "Deployment").spec.template.spec;
    expect(pod.terminationGracePeriodSeconds).toBe(300);
    expect(container(objs, "worker")!.lifecycle.preStop.exec.command).toEqual(["sleep", "7"]);
    expect(one(objs, "ConfigMap").data.STREAMSINK_SHUTDOWN_GRACE_MS).toBe(String((300 - 7 - 10) * 1000));
    expect(renderError({ worker: { terminationGracePeriodSeconds: 12, preStopSleepSeconds: 5 } })).toMatch(/terminationGracePeriodSeconds must exceed/);
  });

  it("probes the gRPC health service; the sidecar on /healthz", () => {
    const objs = render({ worker: { grpcPort: 6000 } });
    const w = container(objs, "worker")!;
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) expect(w[probe].grpc).toEqual({ port: 6000 });
    expect(w.ports).toContainEqual({ name: "grpc", containerPort: 6000, protocol: "TCP" });
    expect(container(objs, "metrics-sidecar")!.readinessProbe.httpGet).toEqual({ path: "/healthz", port: "sidecar-metrics" });
    const noLiveness = container(render({ worker: { probes: { liveness: { enabled: false }, startup: { enabled: true }, readiness: { enabled: true } } } }), "worker")!;
    expect(noLiveness.livenessProbe).toBeUndefined();
  });

  it("runs non-root with a read-only root filesystem, writable /tmp and snapshot dir", () => {
    const objs = render();
    const pod = one(objs, "Deployment").spec.template.spec;
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001, seccompProfile: { type: "RuntimeDefault" } });
    expect(pod.automountServiceAccountToken).toBe(false);
    for (const name of ["worker", "metrics-sidecar"]) {
      expect(container(objs, name)!.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
    }
    expect(container(objs, "worker")!.volumeMounts.map((m: K8sObject) => m.mountPath)).toEqual(["/tmp", "/var/lib/streamsink/snapshots"]);
    expect(pod.volumes.map((v: K8sObject) => Object.keys(v).sort())).toEqual([
      ["emptyDir", "name"],
      ["emptyDir", "name"],
    ]);
  });

  it("mounts a model volume read-only and points the worker at it", () => {
    const objs = render({ worker: { model: { path: "/models/llama", mountPath: "/models", volume: { persistentVolumeClaim: { claimName: "llama", readOnly: true } } } } });
    expect(container(objs, "worker")!.volumeMounts).toContainEqual({ name: "model", mountPath: "/models", readOnly: true });
    expect(one(objs, "Deployment").spec.template.spec.volumes).toContainEqual({ name: "model", persistentVolumeClaim: { claimName: "llama", readOnly: true } });
    expect(one(objs, "ConfigMap").data.STREAMSINK_MODEL).toBe("/models/llama");
  });

  it("advertises the pod IP so other workers can forward calls", () => {
    const w = container(render(CLUSTER), "worker")!;
    expect(envOf(w, "POD_IP")!.valueFrom.fieldRef.fieldPath).toBe("status.podIP");
    expect(envOf(w, "STREAMSINK_ADVERTISE_ADDRESS")!.value).toBe("$(POD_IP):50051");
  });

  it("configures only settings that `streamsink serve` or the sidecar read", () => {
    const known = new Set([...`${serveUsage()}\n${sidecarUsage()}`.matchAll(/STREAMSINK_[A-Z_]+/g)].map((m) => m[0]));
    // Read outside config.ts: the logger's level and serve's shutdown grace.
    known.add("STREAMSINK_LOG_LEVEL").add("STREAMSINK_SHUTDOWN_GRACE_MS");
    const objs = render({}, [join(CHART, "ci", "gpu-keda-sasl-values.yaml")]);
    const names = [
      ...Object.keys(one(objs, "ConfigMap").data),
      ...["worker", "metrics-sidecar"].flatMap((c) => (container(objs, c)!.env as K8sObject[]).map((e) => e.name as string)),
    ].filter((n) => n.startsWith("STREAMSINK_"));
    expect(names.filter((n) => !known.has(n))).toEqual([]);
  });

  it("drops the sidecar and points the metrics Service at the worker's own port", () => {
    const objs = render({ sidecar: { enabled: false } });
    expect(container(objs, "metrics-sidecar")).toBeUndefined();
    const metrics = objs.find((o) => o.kind === "Service" && o.metadata.name === "rel-streamsink-metrics")!;
    expect(metrics.spec.ports[0].targetPort).toBe("metrics");
  });

  it("turns the sidecar's GPU metrics off", () => {
    const side = container(render({ sidecar: { gpuMetrics: { enabled: false } } }), "metrics-sidecar")!;
    expect(side.args).toEqual(expect.arrayContaining(["--nvidia-smi", "off"]));
    expect(envOf(side, "NVIDIA_DRIVER_CAPABILITIES")).toBeUndefined();
  });

  it("tags images with appVersion by default, pins digests, refuses latest", () => {
    const objs = render({ image: { repository: "r/w", digest: `sha256:${"a".repeat(64)}` }, sidecar: { image: { repository: "r/s", tag: "1.2.3" } } });
    expect(container(objs, "worker")!.image).toBe(`r/w@sha256:${"a".repeat(64)}`);
    expect(container(objs, "metrics-sidecar")!.image).toBe("r/s:1.2.3");
    expect(renderError({ image: { tag: "latest" } })).toMatch(/image\/tag/);
  });
});

describe("helm chart: optional objects", () => {
  it("removes the PodDisruptionBudget when disabled, and uses minAvailable when set", () => {
    expect(kinds(render({ podDisruptionBudget: { enabled: false } }))).not.toContain("PodDisruptionBudget");
    const pdb = one(render({ podDisruptionBudget: { minAvailable: "50%" } }), "PodDisruptionBudget");
    expect(pdb.spec).toEqual({ minAvailable: "50%", selector: { matchLabels: expect.any(Object) } });
  });

  it("renders each optional object only when enabled", () => {
    const off = kinds(render({ ...CLUSTER, serviceAccount: { create: false }, service: { metrics: { enabled: false } }, podDisruptionBudget: { enabled: false } }));
    expect(off).toEqual(["ConfigMap", "Deployment", "Service"]);
    const on = kinds(
      render({
        ...CLUSTER,
        serviceMonitor: { enabled: true },
        networkPolicy: { enabled: true },
        autoscaling: { keda: { enabled: true } },
      }),
    );
    for (const k of ["ServiceMonitor", "NetworkPolicy", "ScaledObject"]) expect(on).toContain(k);
    expect(kinds(render({ ...CLUSTER, autoscaling: { hpa: { enabled: true } } }))).toContain("HorizontalPodAutoscaler");
  });

  it("points the ServiceMonitor at the metrics Service only", () => {
    const objs = render({ serviceMonitor: { enabled: true, interval: "30s", labels: { release: "prom" } } });
    const sm = one(objs, "ServiceMonitor");
    expect(sm.metadata.labels.release).toBe("prom");
    expect(sm.spec.endpoints).toEqual([{ port: "metrics", path: "/metrics", interval: "30s", scrapeTimeout: "10s" }]);
    const matching = objs.filter(
      (o) => o.kind === "Service" && Object.entries(sm.spec.selector.matchLabels as Record<string, string>).every(([k, v]) => o.metadata.labels[k] === v),
    );
    expect(matching.map((s) => s.metadata.name)).toEqual(["rel-streamsink-metrics"]);
  });

  it("scales on Kafka lag with KEDA, never beyond the partition count", () => {
    const objs = render({ kafka: { brokers: ["k1:9092", "k2:9092"], partitions: 6, group: "g", inputTopic: "in" }, autoscaling: { maxReplicas: 20, minReplicas: 2, lagThreshold: 250, keda: { enabled: true } } });
    const so = one(objs, "ScaledObject");
    expect(so.spec.maxReplicaCount).toBe(6);
    expect(so.spec.minReplicaCount).toBe(2);
    expect(so.spec.scaleTargetRef).toEqual({ apiVersion: "apps/v1", kind: "Deployment", name: "rel-streamsink" });
    expect(so.spec.triggers).toEqual([
      {
        type: "kafka",
        metadata: {
          bootstrapServers: "k1:9092,k2:9092",
          consumerGroup: "g",
          topic: "in",
          lagThreshold: "250",
          activationLagThreshold: "0",
          offsetResetPolicy: "earliest",
          allowIdleConsumers: "false",
        },
      },
    ]);
    // The autoscaler owns the replica count.
    expect(one(objs, "Deployment").spec.replicas).toBeUndefined();
    expect(kinds(objs)).not.toContain("TriggerAuthentication");
    expect(one(render({ ...CLUSTER, autoscaling: { maxReplicas: 4, keda: { enabled: true } } }), "ScaledObject").spec.maxReplicaCount).toBe(4);
  });

  it("gives KEDA the workers' SASL credentials and TLS", () => {
    const objs = render({}, [join(CHART, "ci", "gpu-keda-sasl-values.yaml")]);
    const so = one(objs, "ScaledObject");
    expect(so.spec.triggers[0].metadata).toMatchObject({ sasl: "scram_sha512", tls: "enable" });
    expect(so.spec.triggers[0].authenticationRef).toEqual({ name: "rel-streamsink" });
    const ta = one(objs, "TriggerAuthentication");
    expect(ta.spec.secretTargetRef).toEqual([
      { parameter: "username", name: "rel-streamsink-kafka", key: "username" },
      { parameter: "password", name: "rel-streamsink-kafka", key: "password" },
    ]);
  });

  it("scales with an HPA on the external lag metric by default", () => {
    const hpa = one(render({ ...CLUSTER, autoscaling: { hpa: { enabled: true }, maxReplicas: 50 } }), "HorizontalPodAutoscaler");
    expect(hpa.spec.maxReplicas).toBe(12);
    expect(hpa.spec.metrics[0].external.metric.name).toBe("streamsink_kafka_consumer_group_lag_records");
    expect(hpa.spec.metrics[0].external.target).toEqual({ type: "AverageValue", averageValue: "100" });
  });

  it("refuses values that cannot work together", () => {
    expect(renderError({ worker: { replicaCount: 3 } })).toMatch(/needs Kafka: set kafka.brokers/);
    expect(renderError({ autoscaling: { keda: { enabled: true } } })).toMatch(/needs Kafka/);
    expect(renderError({ ...CLUSTER, autoscaling: { keda: { enabled: true }, hpa: { enabled: true } } })).toMatch(/not both/);
    expect(renderError({ ...CLUSTER, autoscaling: { minReplicas: 13 } })).toMatch(/minReplicas \(13\)/);
    expect(renderError({ ...CLUSTER, kafka: { brokers: ["k:9092"], sasl: { enabled: true } } })).toMatch(/kafka.sasl.username/);
    expect(renderError({ redis: { auth: { enabled: true, password: "p" } } })).toMatch(/needs redis.url/);
    expect(renderError({ worker: { bogus: 1 } })).toMatch(/additional properties 'bogus' not allowed/);
    expect(renderError({ kafka: { brokers: ["no-port"] } })).toMatch(/brokers/);
  });
});

describe("helm chart: credentials", () => {
  it("keeps SASL and Redis passwords in chart Secrets and builds the Redis URL from the Secret", () => {
    const objs = render({}, [join(CHART, "ci", "gpu-keda-sasl-values.yaml")]);
    const secrets = objs.filter((o) => o.kind === "Secret");
    expect(secrets.map((s) => s.metadata.name).sort()).toEqual(["rel-streamsink-kafka", "rel-streamsink-redis"]);
    const kafka = secrets.find((s) => s.metadata.name === "rel-streamsink-kafka")!;
    expect(Buffer.from(kafka.data.password, "base64").toString()).toBe("kafka-secret");
    expect(JSON.stringify(one(objs, "ConfigMap"))).not.toMatch(/secret/);
    const w = container(objs, "worker")!;
    expect(envOf(w, "REDIS_PASSWORD")!.valueFrom.secretKeyRef).toEqual({ name: "rel-streamsink-redis", key: "redis-password" });
    expect(envOf(w, "STREAMSINK_REDIS_URL")!.value).toBe("rediss://:$(REDIS_PASSWORD)@redis-master.data:6380/0");
    expect(envOf(w, "STREAMSINK_KAFKA_SASL_PASSWORD")!.valueFrom.secretKeyRef).toEqual({ name: "rel-streamsink-kafka", key: "password" });
    expect(envOf(container(objs, "metrics-sidecar")!, "STREAMSINK_KAFKA_SASL_USERNAME")).toBeDefined();
    expect(one(objs, "ConfigMap").data.STREAMSINK_KAFKA_SASL_MECHANISM).toBe("scram-sha-512");
  });

  it("uses existing Secrets without making its own", () => {
    const objs = render({}, [join(CHART, "ci", "hpa-existing-secrets-values.yaml")]);
    expect(kinds(objs)).not.toContain("Secret");
    const w = container(objs, "worker")!;
    expect(envOf(w, "STREAMSINK_KAFKA_SASL_USERNAME")!.valueFrom.secretKeyRef).toEqual({ name: "kafka-credentials", key: "user" });
    expect(envOf(w, "REDIS_PASSWORD")!.valueFrom.secretKeyRef).toEqual({ name: "redis-credentials", key: "redis-password" });
    expect(envOf(w, "STREAMSINK_REDIS_URL")!.value).toBe("redis://:$(REDIS_PASSWORD)@redis.data:6379");
  });

  it("passes a Redis URL through untouched without auth", () => {
    const w = container(render({ ...CLUSTER, redis: { url: "redis://r:6379/2" } }), "worker")!;
    expect(envOf(w, "STREAMSINK_REDIS_URL")!.value).toBe("redis://r:6379/2");
    expect(envOf(w, "REDIS_PASSWORD")).toBeUndefined();
  });
});

describe("helm chart: NetworkPolicy", () => {
  it("lets the allowed clients and the other workers reach gRPC, the monitoring peers the metrics", () => {
    const objs = render({}, [join(CHART, "ci", "gpu-keda-sasl-values.yaml")]);
    const np = one(objs, "NetworkPolicy");
    expect(np.spec.policyTypes).toEqual(["Ingress", "Egress"]);
    const [grpc, metrics] = np.spec.ingress;
    expect(grpc.ports).toEqual([{ port: "grpc", protocol: "TCP" }]);
    expect(grpc.from[0].podSelector.matchLabels["app.kubernetes.io/component"]).toBe("worker");
    expect(grpc.from[1].namespaceSelector.matchLabels["kubernetes.io/metadata.name"]).toBe("gateway");
    expect(metrics.ports).toEqual([{ port: "sidecar-metrics", protocol: "TCP" }]);
    expect(np.spec.egress[0].ports).toContainEqual({ port: 53, protocol: "UDP" });
    expect(np.spec.egress).toHaveLength(4);
  });

  it("allows gRPC from anywhere when no clients are listed", () => {
    const np = one(render({ networkPolicy: { enabled: true } }), "NetworkPolicy");
    expect(np.spec.ingress[0].from).toBeUndefined();
    expect(np.spec.policyTypes).toEqual(["Ingress"]);
  });
});

describe("helm chart: the validators catch broken manifests", () => {
  const broken = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: broken
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - image: x
          imagePullPolicy: IfNotPresent
          bogusField: 1
`;

  it("manifest-check refuses unknown fields", () => {
    const r = spawnSync(tools.MANIFEST_CHECK!, ["-"], { input: broken, encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/unknown field "spec.template.spec.containers\[0\].bogusField"/);
  });

  it("kubernetes-validate refuses a container without a name", () => {
    const file = join(tmp, "broken.yaml");
    writeFileSync(file, broken);
    const r = spawnSync(tools.KUBERNETES_VALIDATE!, ["--strict", "-k", KUBE_VERSION, file], { encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/'name' is a required property/);
  });

  it("manifest-check and kubernetes-validate accept every scenario's rendering", () => {
    for (const scenario of ["gpu-keda-sasl-values.yaml", "hpa-existing-secrets-values.yaml", "minimal-cpu-values.yaml", "security-values.yaml"]) {
      const out = execFileSync(tools.HELM!, ["template", "rel", CHART, "--kube-version", KUBE_VERSION, "-f", join(CHART, "ci", scenario)], { encoding: "utf8" });
      const file = join(tmp, scenario);
      writeFileSync(file, out);
      expect(spawnSync(tools.MANIFEST_CHECK!, [file], { encoding: "utf8" }).status).toBe(0);
      const kv = spawnSync(tools.KUBERNETES_VALIDATE!, ["--strict", "--quiet", "-k", KUBE_VERSION, file], { encoding: "utf8" });
      expect(kv.stdout).not.toMatch(/ERROR/);
      expect(kv.status).toBe(0);
    }
  });
});

describe("helm chart: security", () => {
  const SECURED = join(CHART, "ci", "security-values.yaml");

  it("mounts the TLS Secret as a directory (rotation reaches the worker) and points the worker at it; mutual TLS uses its ca.crt", () => {
    const objs = render({}, [SECURED]);
    const data = one(objs, "ConfigMap").data;
    expect(data.STREAMSINK_GRPC_TLS_CERT).toBe("/etc/streamsink/tls/tls.crt");
    expect(data.STREAMSINK_GRPC_TLS_KEY).toBe("/etc/streamsink/tls/tls.key");
    expect(data.STREAMSINK_GRPC_TLS_CLIENT_CA).toBe("/etc/streamsink/tls/ca.crt");
    expect(data.STREAMSINK_GRPC_TLS_REFRESH_MS).toBe("10000");
    const w = container(objs, "worker")!;
    const mount = (w.volumeMounts as K8sObject[]).find((m) => m.name === "grpc-tls")!;
    expect(mount).toEqual({ name: "grpc-tls", mountPath: "/etc/streamsink/tls", readOnly: true });
    const volume = (one(objs, "Deployment").spec.template.spec.volumes as K8sObject[]).find((v) => v.name === "grpc-tls")!;
    expect(volume.secret.secretName).toBe("streamsink-grpc-tls");
    // kubelet gRPC probes cannot speak TLS: the probes check the port instead.
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) expect(w[probe]).toMatchObject({ tcpSocket: { port: "grpc" } });
    const plain = one(render({ ...CLUSTER, security: { grpcTls: { enabled: true, secretName: "t" } } }), "ConfigMap").data;
    expect(plain.STREAMSINK_GRPC_TLS_CLIENT_CA).toBeUndefined();
  });

  it("keeps tokens, the JWT key and the peer secret in a Secret mounted read-only, never in the ConfigMap", () => {
    const objs = render({}, [SECURED]);
    const secret = objs.find((o) => o.kind === "Secret" && o.metadata.name === "rel-streamsink-auth")!;
    const tenants = JSON.parse(Buffer.from(secret.data["tenants.json"], "base64").toString()) as { tokens: Array<{ tenant: string }>; tenants: Record<string, unknown> };
    expect(tenants.tokens.map((t) => t.tenant)).toEqual(["acme", "beta"]);
    expect(tenants.tenants.acme).toEqual({ maxSessions: 100, requestsPerSecond: 50 });
    expect(Buffer.from(secret.data["peer-secret"], "base64").toString()).toBe("a-long-shared-peer-secret-value");
    expect(Buffer.from(secret.data["jwt-public-key.pem"], "base64").toString()).toMatch(/BEGIN PUBLIC KEY/);
    const config = JSON.stringify(one(objs, "ConfigMap"));
    expect(config).not.toMatch(/peer-secret-value|5d41402abc4b2a76|BEGIN PUBLIC KEY/);
    const data = one(objs, "ConfigMap").data;
    expect(data.STREAMSINK_TENANTS_FILE).toBe("/etc/streamsink/auth/tenants.json");
    expect(data.STREAMSINK_PEER_SECRET_FILE).toBe("/etc/streamsink/auth/peer-secret");
    expect(data.STREAMSINK_JWT_PUBLIC_KEY_FILE).toBe("/etc/streamsink/auth/jwt-public-key.pem");
    expect(data.STREAMSINK_JWT_ISSUER).toBe("https://issuer.example");
    expect(data.STREAMSINK_TENANT_MAX_STREAMS).toBe("32");
    const volume = (one(objs, "Deployment").spec.template.spec.volumes as K8sObject[]).find((v) => v.name === "auth")!;
    expect(volume.secret).toEqual({ secretName: "rel-streamsink-auth", defaultMode: 0o440 });
  });

  it("trusts the Kafka and Redis CAs from Secrets, presents a client certificate to Kafka, logs in to Redis as an ACL user", () => {
    const objs = render({}, [SECURED]);
    const data = one(objs, "ConfigMap").data;
    expect(data.STREAMSINK_KAFKA_SSL).toBe("true");
    expect(data.STREAMSINK_KAFKA_TLS_CA).toBe("/etc/streamsink/kafka-ca/ca.crt");
    expect(data.STREAMSINK_KAFKA_TLS_CERT).toBe("/etc/streamsink/kafka-client/tls.crt");
    expect(data.STREAMSINK_KAFKA_TLS_KEY).toBe("/etc/streamsink/kafka-client/tls.key");
    expect(data.STREAMSINK_REDIS_TLS_CA).toBe("/etc/streamsink/redis-ca/ca.crt");
    expect(data.STREAMSINK_REDIS_USERNAME).toBe("streamsink");
    const volumes = one(objs, "Deployment").spec.template.spec.volumes as K8sObject[];
    expect(volumes.find((v) => v.name === "kafka-ca")!.secret).toEqual({ secretName: "kafka-ca", items: [{ key: "ca.crt", path: "ca.crt" }] });
    expect(volumes.find((v) => v.name === "redis-ca")!.secret.secretName).toBe("redis-ca");
    expect(volumes.find((v) => v.name === "kafka-client")!.secret).toEqual({ secretName: "streamsink-kafka-client", defaultMode: 0o440 });
    const w = container(objs, "worker")!;
    expect((w.volumeMounts as K8sObject[]).map((m) => m.mountPath)).toEqual(expect.arrayContaining(["/etc/streamsink/kafka-ca", "/etc/streamsink/redis-ca"]));
    expect(envOf(w, "STREAMSINK_REDIS_URL")!.value).toBe("rediss://:$(REDIS_PASSWORD)@redis.data:6380/0");
    expect(renderError({ redis: { url: "redis://r:6379", tlsCaSecret: "ca" } })).toMatch(/rediss/);
  });

  it("mounts the worker's Kafka CA and client certificate in the sidecar too (its lag probe reads the same ConfigMap paths)", () => {
    const mounts = (objs: K8sObject[]) => ((container(objs, "metrics-sidecar")!.volumeMounts ?? []) as K8sObject[]).map((m) => [m.name, m.mountPath, m.readOnly]);
    const secured = render({}, [SECURED]);
    expect(mounts(secured)).toEqual([
      ["kafka-ca", "/etc/streamsink/kafka-ca", true],
      ["kafka-client", "/etc/streamsink/kafka-client", true],
    ]);
    const data = one(secured, "ConfigMap").data;
    for (const [, path] of mounts(secured)) expect([data.STREAMSINK_KAFKA_TLS_CA, data.STREAMSINK_KAFKA_TLS_CERT].some((f: string) => f.startsWith(`${path}/`))).toBe(true);
    expect(mounts(render({ kafka: { brokers: ["kafka:9093"], tls: true, tlsCaSecret: "kafka-ca" } }))).toEqual([["kafka-ca", "/etc/streamsink/kafka-ca", true]]);
    expect(mounts(render({ kafka: { brokers: ["kafka:9093"], tls: true } }))).toEqual([]);
    expect(mounts(render({ kafka: { brokers: ["kafka:9093"], tls: false, tlsCaSecret: "kafka-ca" } }))).toEqual([]);
  });

  it("uses an existing auth Secret without making its own", () => {
    const objs = render({ ...CLUSTER, security: { auth: { enabled: true, existingSecret: "tenants" } } });
    expect(objs.filter((o) => o.kind === "Secret")).toEqual([]);
    const volume = (one(objs, "Deployment").spec.template.spec.volumes as K8sObject[]).find((v) => v.name === "auth")!;
    expect(volume.secret.secretName).toBe("tenants");
    expect(one(objs, "ConfigMap").data.STREAMSINK_PEER_SECRET_FILE).toBe("/etc/streamsink/auth/peer-secret");
  });

  it("renders nothing of security by default (embedded, plaintext, no tokens)", () => {
    const objs = render();
    expect(objs.filter((o) => o.kind === "Secret")).toEqual([]);
    const data = one(objs, "ConfigMap").data;
    expect(Object.keys(data).filter((k) => /TLS_CERT|TENANTS_FILE|JWT|PEER/.test(k))).toEqual([]);
  });

  it("refuses security settings that cannot work", () => {
    expect(renderError({ security: { grpcTls: { enabled: true } } })).toMatch(/secretName/);
    expect(renderError({ security: { auth: { enabled: true } } })).toMatch(/tokens/);
    expect(renderError({ ...CLUSTER, security: { auth: { enabled: true, tenants: { tokens: [{ tenant: "a", sha256: "0".repeat(64) }] } } } })).toMatch(/peerSecret/);
    expect(renderError({ security: { auth: { enabled: true, jwt: { enabled: true, issuer: "i", audience: "a" } } } })).toMatch(/publicKey/);
    expect(renderError({ security: { auth: { tenants: { tokens: [{ tenant: "Not A Tenant", sha256: "0".repeat(64) }] } } } })).toMatch(/tenant/);
  });
});
