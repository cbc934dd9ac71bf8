import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { parseDuration } from "@fleet/core/backoff";
import { QUEUES } from "@fleet/jobs/names";
import { JOB_STATES } from "../../dashboard/src/dashboardMetrics";
import { dashboardSchema } from "../../dashboard/src/config";
import { schedulerSchema } from "../../scheduler/src/config";
import { workerSchema } from "../../worker/src/config";
import { cliSchema } from "../src/config";

/**
 * deploy/k8s checked at schema level (no cluster here): every manifest is listed, workloads run
 * entry points the build produces with config the apps accept, probes hit the ops endpoints on
 * the configured port, and the autoscaler watches a metric the dashboard exports.
 */
const root = join(__dirname, "..", "..", "..");
const dir = join(root, "deploy", "k8s");

interface Container {
  name: string;
  image: string;
  command: string[];
  envFrom?: Array<{ configMapRef?: { name: string }; secretRef?: { name: string } }>;
  env?: Array<{ name: string; value: string }>;
  ports?: Array<{ name: string; containerPort: number }>;
  livenessProbe?: { httpGet: { path: string; port: string } };
  readinessProbe?: { httpGet: { path: string; port: string } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}
type Manifest = { apiVersion: string; kind: string; metadata: { name: string }; [key: string]: any };

const files = readdirSync(dir).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml");
const manifests: Manifest[] = files.flatMap((f) =>
  parseAllDocuments(readFileSync(join(dir, f), "utf8")).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${f}: ${doc.errors[0]!.message}`);
    return doc.toJS() as Manifest;
  }),
);
const byKind = (kind: string) => manifests.filter((m) => m.kind === kind);
const configMap = byKind("ConfigMap").find((m) => m.metadata.name === "fleet-config")!;
const secret = byKind("Secret").find((m) => m.metadata.name === "fleet-secrets")!;
const workloads = [...byKind("Deployment"), ...byKind("Job")];

function envOf(container: Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    if (from.configMapRef) Object.assign(env, byKind("ConfigMap").find((m) => m.metadata.name === from.configMapRef!.name)!.data);
    if (from.secretRef) Object.assign(env, byKind("Secret").find((m) => m.metadata.name === from.secretRef!.name)!.stringData);
  }
  for (const e of container.env ?? []) env[e.name] = e.value;
  return env;
}

describe("deploy/k8s", () => {
  it("the kustomization lists every manifest; every manifest names its kind", () => {
    const kustomization = parseAllDocuments(readFileSync(join(dir, "kustomization.yaml"), "utf8"))[0]!.toJS() as { resources: string[] };
    expect([...kustomization.resources].sort()).toEqual([...files].sort());
    for (const m of manifests) expect([m.kind, typeof m.apiVersion, typeof m.metadata?.name]).toEqual([m.kind, "string", "string"]);
    expect(workloads.map((w) => w.metadata.name).sort()).toEqual(["fleet-dashboard", "fleet-migrate", "fleet-scheduler", "fleet-worker"]);
    expect([configMap, secret].every(Boolean)).toBe(true);
  });

  it("workloads run built entry points, non-root, with resources, and config their app accepts (secrets are placeholders)", () => {
    for (const w of workloads) {
      const spec = w.spec.template.spec;
      expect([w.metadata.name, spec.securityContext?.runAsNonRoot]).toEqual([w.metadata.name, true]);
      if (w.kind === "Deployment") expect(w.spec.selector.matchLabels).toEqual(w.spec.template.metadata.labels);
      for (const c of spec.containers as Container[]) {
        const entry = c.command.find((part) => part.endsWith(".js"))!;
        expect([c.name, existsSync(join(root, entry.replace("/dist/", "/src/").replace(/\.js$/, ".ts")))]).toEqual([c.name, true]);
        expect([c.name, c.image, Boolean(c.resources?.requests?.memory), Boolean(c.resources?.limits?.memory)]).toEqual([c.name, "fleet", true, true]);
        const schema = entry.includes("worker") ? workerSchema : entry.includes("scheduler") ? schedulerSchema : entry.includes("dashboard") ? dashboardSchema : cliSchema;
        const issues = (schema.safeParse(envOf(c)).error?.issues ?? []).map((i) => String(i.path[0]));
        // The dashboard's users and session secret are placeholders until the operator fills secret.yaml.
        expect([c.name, issues]).toEqual([c.name, entry.includes("dashboard") ? ["DASHBOARD_USERS", "DASHBOARD_SESSION_SECRET"] : []]);
      }
    }
  });

  it("probes hit /healthz and /readyz on the port the app listens on; workers get time to shut down", () => {
    for (const [name, portVar] of [["fleet-worker", "METRICS_PORT"], ["fleet-dashboard", "DASHBOARD_PORT"]] as const) {
      const deployment = byKind("Deployment").find((d) => d.metadata.name === name)!;
      const c = deployment.spec.template.spec.containers[0] as Container;
      const env = envOf(c);
      expect([name, c.livenessProbe?.httpGet.path, c.readinessProbe?.httpGet.path]).toEqual([name, "/healthz", "/readyz"]);
      for (const probe of [c.livenessProbe!, c.readinessProbe!]) {
        expect(c.ports!.find((p) => p.name === probe.httpGet.port)?.containerPort).toBe(Number(env[portVar]));
      }
    }
    const worker = byKind("Deployment").find((d) => d.metadata.name === "fleet-worker")!;
    const deadline = parseDuration(envOf(worker.spec.template.spec.containers[0]).SHUTDOWN_DEADLINE!);
    expect(worker.spec.template.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(deadline);
  });

  it("the worker autoscaler targets the worker Deployment on a queue-depth series the dashboard exports", () => {
    const [hpa] = byKind("HorizontalPodAutoscaler");
    expect(hpa!.spec.scaleTargetRef).toEqual({ apiVersion: "apps/v1", kind: "Deployment", name: "fleet-worker" });
    const metric = hpa!.spec.metrics[0].external.metric;
    expect(metric.name).toBe("fleet_queue_jobs");
    expect(Object.values(QUEUES)).toContain(metric.selector.matchLabels.queue);
    expect(JOB_STATES).toContain(metric.selector.matchLabels.state);
    expect(readFileSync(join(root, "apps", "dashboard", "src", "dashboardMetrics.ts"), "utf8")).toContain('name: "fleet_queue_jobs"');
  });
});
