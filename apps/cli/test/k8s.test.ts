import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { parseDuration } from "@fleet/core/backoff";
import { bullPrefix } from "@fleet/core/redis";
import { dashboardSchema } from "../../dashboard/src/config";
import { hashPassword } from "../../dashboard/src/passwords";
import { schedulerSchema } from "../../scheduler/src/config";
import { workerSchema } from "../../worker/src/config";
import { cliSchema } from "../src/config";
import { schemaProblems } from "./k8sSchemas";
import { renderKustomization } from "./kustomize";
import type { K8sObject } from "./kustomize";

/**
 * deploy/k8s checked without a cluster: each kustomization rendered (and compared with
 * `kubectl kustomize` where kubectl exists), every object validated against the Kubernetes,
 * KEDA and Prometheus Operator schemas, and what the objects say checked against the apps:
 * entry points, config they accept (secrets through NAME_FILE from the documented Secrets),
 * probes on the ops ports, security contexts, the migration Job's name, the autoscaler's
 * Redis keys and targets, the scrape targets.
 */
const root = join(__dirname, "..", "..", "..");
const k8s = join(root, "deploy", "k8s");
const KUSTOMIZATIONS = ["", "hpa", "monitoring"];
const kubectl = (() => {
  try {
    execFileSync("kubectl", ["version", "--client"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

const rendered = Object.fromEntries(KUSTOMIZATIONS.map((dir) => [dir, renderKustomization(join(k8s, dir))])) as Record<string, K8sObject[]>;
const main = rendered[""]!;
const byKind = (objects: K8sObject[], kind: string) => objects.filter((o) => o.kind === kind);
const workloads = [...byKind(main, "Deployment"), ...byKind(main, "Job")];
const configMap = main.find((o) => o.kind === "ConfigMap" && o.metadata.name === "fleet-config")!;

/** The Secrets and keys the kustomization tells operators to create (`kubectl create secret … --from-literal=KEY=`). */
function documentedSecrets(): Record<string, string[]> {
  const text = readFileSync(join(k8s, "kustomization.yaml"), "utf8");
  const out: Record<string, string[]> = {};
  for (const block of text.split("kubectl create secret generic ").slice(1)) {
    const name = /^(\S+)/.exec(block)![1]!;
    out[name] = [...block.split(/\n#\s*\(|\n[^#]/)[0]!.matchAll(/--from-literal=(\w+)=/g)].map((m) => m[1]!);
  }
  return out;
}

const sortKey = (o: K8sObject) => `${o.kind}/${o.metadata.name}`;

describe("deploy/k8s", () => {
  let examples: Record<string, string>;
  beforeAll(async () => {
    const hex = "ab".repeat(32);
    examples = {
      DATABASE_URL: "postgresql://fleet:pw@postgres:5432/fleet",
      REDIS_URL: "redis://:pw@redis:6379",
      REDIS_PASSWORD: "pw",
      DASHBOARD_USERS: `alice:operator:${await hashPassword("pw", { N: 1024, r: 8, p: 1 })}`,
      DASHBOARD_SESSION_SECRET: hex,
      DASHBOARD_API_TOKENS: `prometheus:metrics:${hex}`,
      METRICS_TOKEN: hex,
    };
  });

  it.each(KUSTOMIZATIONS)("renders %s the way kubectl kustomize does", (dir) => {
    const objects = rendered[dir]!;
    expect(objects.length).toBeGreaterThan(1);
    if (!kubectl) {
      process.stderr.write("kubectl not found: the renderer's output is not cross-checked against kubectl kustomize\n");
      return;
    }
    const text = execFileSync("kubectl", ["kustomize", join(k8s, dir)], { encoding: "utf8" });
    const real = parseAllDocuments(text).map((d) => d.toJS() as K8sObject);
    expect([...objects].sort((a, b) => sortKey(a).localeCompare(sortKey(b)))).toEqual(real.sort((a, b) => sortKey(a).localeCompare(sortKey(b))));
  });

  it.each(KUSTOMIZATIONS)("%s: every object passes the Kubernetes / KEDA / Prometheus Operator schemas, without unknown fields", (dir) => {
    expect(schemaProblems(rendered[dir]!)).toEqual([]);
  });

  it("the schema check catches wrong types and unknown fields (it can fail)", () => {
    const worker = main.find((o) => o.metadata.name === "fleet-worker" && o.kind === "Deployment")!;
    const wrongType = structuredClone(worker);
    wrongType.spec.template.spec.containers[0].ports[0].containerPort = "9464";
    expect(schemaProblems([wrongType])).toEqual([
      "Deployment/fleet-worker: data/spec/template/spec/containers/0/ports/0/containerPort must be integer",
      expect.stringMatching(/^Deployment\/fleet-worker \(line \d+\): Type 'string' is not assignable to type 'number'/),
    ]);
    const typo = structuredClone(worker);
    typo.spec.template.spec.containers[0].securityContex = {};
    expect(schemaProblems([typo])).toEqual([expect.stringMatching(/^Deployment\/fleet-worker \(line \d+\): Object literal may only specify known properties, and '"securityContex"' does not exist in type 'IContainer'/)]);
  });

  it("has no Secret (created outside, documented), and the apps, Job, autoscaler and its auth", () => {
    expect(main.map(sortKey).sort()).toEqual([
      "ConfigMap/fleet-config",
      "Deployment/fleet-dashboard",
      "Deployment/fleet-scheduler",
      "Deployment/fleet-worker",
      "Job/fleet-migrate-0.1.0",
      "ScaledObject/fleet-worker",
      "Service/fleet-dashboard",
      "TriggerAuthentication/fleet-redis",
    ]);
    expect(documentedSecrets()).toEqual({
      "fleet-secrets": ["DATABASE_URL", "REDIS_URL", "REDIS_PASSWORD", "METRICS_TOKEN"],
      "fleet-dashboard-secrets": ["DASHBOARD_USERS", "DASHBOARD_SESSION_SECRET", "DASHBOARD_API_TOKENS"],
    });
  });

  it("workloads run built entry points with config their app accepts; secrets come as files from the documented Secrets", () => {
    const secrets = documentedSecrets();
    for (const w of workloads) {
      const spec = w.spec.template.spec;
      for (const c of spec.containers) {
        const entry = (c.command as string[]).find((part) => part.endsWith(".js"))!;
        expect([c.name, existsSync(join(root, entry.replace("/dist/", "/src/").replace(/\.js$/, ".ts")))]).toEqual([c.name, true]);
        expect([c.name, c.image]).toEqual([c.name, "ghcr.io/your-org/fleet:0.1.0"]);
        expect([c.name, Object.keys(c.resources.requests).sort(), Object.keys(c.resources.limits).sort()]).toEqual([c.name, ["cpu", "memory"], ["cpu", "memory"]]);
        const env: Record<string, string> = { ...configMap.data };
        for (const e of c.env ?? []) env[e.name] = e.value;
        for (const [name, path] of Object.entries(env).filter(([k]) => k.endsWith("_FILE"))) {
          const mount = (c.volumeMounts as Array<{ name: string; mountPath: string }>).find((m) => path.startsWith(`${m.mountPath}/`));
          const volume = spec.volumes.find((v: { name: string }) => v.name === mount?.name);
          const key = path.slice(mount!.mountPath.length + 1);
          expect([c.name, name, secrets[volume?.secret?.secretName]?.includes(key)]).toEqual([c.name, name, true]);
          delete env[name];
          env[name.replace(/_FILE$/, "")] = examples[key]!;
        }
        const schema = entry.includes("worker") ? workerSchema : entry.includes("scheduler") ? schedulerSchema : entry.includes("dashboard") ? dashboardSchema : cliSchema;
        expect([c.name, schema.safeParse(env).error?.issues ?? []]).toEqual([c.name, []]);
      }
    }
  });

  it("every pod and container runs locked down: non-root, read-only root with an emptyDir /tmp, no privilege escalation, no capabilities, seccomp", () => {
    for (const w of workloads) {
      const spec = w.spec.template.spec;
      expect([w.metadata.name, spec.automountServiceAccountToken, spec.securityContext]).toEqual([
        w.metadata.name,
        false,
        { runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000, seccompProfile: { type: "RuntimeDefault" } },
      ]);
      for (const c of spec.containers) {
        expect([c.name, c.securityContext]).toEqual([c.name, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ["ALL"] } }]);
        const tmp = c.volumeMounts.find((m: { mountPath: string }) => m.mountPath === "/tmp");
        expect([c.name, spec.volumes.find((v: { name: string }) => v.name === tmp?.name)?.emptyDir]).toEqual([c.name, expect.any(Object)]);
      }
    }
  });

  it("probes hit /healthz and /readyz on the port each app listens on; workers get SHUTDOWN_DEADLINE plus a margin", () => {
    for (const [name, portVar] of [["fleet-worker", "METRICS_PORT"], ["fleet-scheduler", "SCHEDULER_METRICS_PORT"], ["fleet-dashboard", "DASHBOARD_PORT"]] as const) {
      const c = byKind(main, "Deployment").find((d) => d.metadata.name === name)!.spec.template.spec.containers[0];
      const port = c.env.find((e: { name: string }) => e.name === portVar)?.value;
      expect([name, c.livenessProbe?.httpGet.path, c.readinessProbe?.httpGet.path]).toEqual([name, "/healthz", "/readyz"]);
      for (const probe of [c.livenessProbe, c.readinessProbe]) expect([name, c.ports.find((p: { name: string }) => p.name === probe.httpGet.port)?.containerPort]).toEqual([name, Number(port)]);
    }
    const worker = byKind(main, "Deployment").find((d) => d.metadata.name === "fleet-worker")!.spec.template.spec;
    const deadline = parseDuration(worker.containers[0].env.find((e: { name: string }) => e.name === "SHUTDOWN_DEADLINE").value);
    expect(worker.terminationGracePeriodSeconds * 1000).toBeGreaterThanOrEqual(deadline + 10_000);
  });

  it("the migration Job is named after the image tag, a valid Job name", () => {
    const [job] = byKind(main, "Job");
    const image = job!.spec.template.spec.containers[0].image as string;
    expect(job!.metadata.name).toBe(`fleet-migrate-${image.split(":")[1]}`);
    expect(job!.metadata.name).toMatch(/^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/);
    expect(job!.spec.template.spec.restartPolicy).toBe("OnFailure");
  });

  it("the ScaledObject scales the worker Deployment on BullMQ's wait and active lists, one target per worker's concurrency", () => {
    const [so] = byKind(main, "ScaledObject");
    const worker = byKind(main, "Deployment").find((d) => d.metadata.name === "fleet-worker")!;
    const env = Object.fromEntries(worker.spec.template.spec.containers[0].env.map((e: { name: string; value: string }) => [e.name, e.value]));
    const concurrency = workerSchema.parse({ ...configMap.data, ...env, DATABASE_URL_FILE: undefined, REDIS_URL_FILE: undefined }).WORKER_CONCURRENCY;
    expect(so!.spec.scaleTargetRef).toEqual({ name: worker.metadata.name });
    expect(so!.spec.minReplicaCount).toBeGreaterThanOrEqual(1);
    expect(so!.spec.maxReplicaCount).toBeGreaterThan(so!.spec.minReplicaCount);
    expect(so!.spec.cooldownPeriod).toBeGreaterThan(0);
    expect(so!.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds).toBeGreaterThanOrEqual(300);
    const prefix = bullPrefix(configMap.data.FLEET_PREFIX);
    const triggers = (so!.spec.triggers as Array<{ type: string; metadata: Record<string, string>; authenticationRef: { name: string } }>).map((t) => {
      const [, queue, list] = new RegExp(`^${prefix.replace(/[{}]/g, "\\$&")}:(\\w+):(wait|active)$`).exec(t.metadata.listName ?? "") ?? [];
      return { type: t.type, queue, list, target: Number(t.metadata.listLength), concurrency: concurrency[queue!] };
    });
    expect(triggers.map((t) => `${t.queue}:${t.list}`).sort()).toEqual(["migration:active", "migration:wait", "remote:active", "remote:wait"]);
    for (const t of triggers) expect(t).toEqual({ ...t, type: "redis", target: t.concurrency });
    const auth = byKind(main, "TriggerAuthentication").find((a) => a.metadata.name === (so!.spec.triggers[0].authenticationRef.name as string))!;
    for (const ref of auth.spec.secretTargetRef) expect(documentedSecrets()[ref.name]).toContain(ref.key);
  });

  it("the HPA alternative targets the workers on the adapter rule's metric; monitoring scrapes the dashboard with a token and the ops ports", () => {
    const [hpa] = byKind(rendered.hpa!, "HorizontalPodAutoscaler");
    expect(byKind(rendered.hpa!, "ScaledObject")).toEqual([]);
    expect(hpa!.spec.scaleTargetRef).toEqual({ apiVersion: "apps/v1", kind: "Deployment", name: "fleet-worker" });
    const rules = parseAllDocuments(readFileSync(join(k8s, "hpa", "prometheus-adapter-rules.yaml"), "utf8"))[0]!.toJS() as { rules: { external: Array<{ name: { as: string } }> } };
    expect(rules.rules.external.map((r) => r.name.as)).toContain(hpa!.spec.metrics[0].external.metric.name);

    const monitoring = rendered.monitoring!;
    const [sm] = byKind(monitoring, "ServiceMonitor");
    const service = byKind(main, "Service").find((s) => s.metadata.name === "fleet-dashboard")!;
    expect(service.metadata.labels).toMatchObject(sm!.spec.selector.matchLabels);
    expect(service.spec.ports.map((p: { name: string }) => p.name)).toContain(sm!.spec.endpoints[0].port);
    expect(sm!.spec.endpoints[0].authorization).toEqual({ type: "Bearer", credentials: { name: "fleet-metrics-token", key: "token" } });
    const [pm] = byKind(monitoring, "PodMonitor");
    const selected = byKind(main, "Deployment").filter((d) => pm!.spec.selector.matchExpressions[0].values.includes(d.spec.template.metadata.labels["app.kubernetes.io/name"]));
    expect(selected.map((d) => d.metadata.name).sort()).toEqual(["fleet-scheduler", "fleet-worker"]);
    for (const d of selected) expect(d.spec.template.spec.containers[0].ports.map((p: { name: string }) => p.name)).toContain(pm!.spec.podMetricsEndpoints[0].port);
  });
});
