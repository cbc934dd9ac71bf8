import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Queue } from "bullmq";
import { bullPrefix } from "@fleet/core/redis";
import { createTestDatabase, unusedTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { freePort } from "@fleet/testing/freePort";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { CLI, fleet } from "./runFleet";

/**
 * The CLI's manners, each as the issue found it broken: --version; output piped into `head`;
 * usage errors exit 2 with the usage line (runtime failures 1); numeric options checked;
 * `fleet config` shows every app's variables with the value in effect and where it came from,
 * secrets redacted; database errors name the variable, the host and the fix; a prefix with no
 * fleet behind it is reported, and looking creates no key.
 */
describe("fleet CLI hygiene", () => {
  let database: TestDatabase;
  let dir: string;
  const prefix = uniquePrefix("cli-hygiene");
  let env: Record<string, string>;

  beforeAll(async () => {
    database = await createTestDatabase();
    dir = await mkdtemp(join(tmpdir(), "fleet-hygiene-"));
    env = { DATABASE_URL: database.url, REDIS_URL: testRedisUrl(), FLEET_PREFIX: prefix, LOG_LEVEL: "warn" };
  });
  afterAll(async () => {
    await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
    await database?.drop();
    await rm(dir, { recursive: true, force: true });
  });

  /** `fleet ARGS | head -n LINES` in a shell: what an operator types. */
  function piped(args: string[], lines: number, extra: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> {
    const command = `"${process.execPath}" "${CLI}" ${args.map((a) => `'${a}'`).join(" ")} | head -n ${lines}; exit \${PIPESTATUS[0]}`;
    const child = spawn("bash", ["--norc", "--noprofile", "-c", command], { env: { PATH: process.env.PATH, FLEET_ENV_FILE: "/nonexistent", ...env, ...extra } });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    return new Promise((resolve) => child.on("close", (code) => resolve({ code, out, err })));
  }

  it("--version prints the version", async () => {
    for (const flag of ["--version", "-V"]) {
      const r = await fleet(env, [flag]);
      expect([r.code, r.out, r.err]).toEqual([0, "0.1.0\n", ""]);
    }
  });

  it("output cut short by `| head` ends quietly: no EPIPE, no stack", async () => {
    // Large enough to outgrow the pipe's buffer, so writes continue after head has gone.
    const config = await piped(["config"], 1, Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`X_PAD_${i}`, "x".repeat(400)])));
    expect([config.code, config.out.split("\n").length, config.err]).toEqual([0, 2, ""]);
    const bigConfig = await piped(["config", "--json"], 0);
    expect([bigConfig.code, bigConfig.err]).toEqual([0, ""]);
    // A fleet under the prefix, so that status has nothing to complain about.
    const q = new Queue("migration", { connection: { url: testRedisUrl() }, prefix: bullPrefix(prefix) });
    await q.waitUntilReady();
    await q.close();
    const status = await piped(["migrate", "status"], 2);
    expect([status.code, status.out.split("\n").length, status.err]).toEqual([0, 3, ""]);
  });

  it("usage errors exit 2 with the usage line; runtime failures exit 1", async () => {
    const cases: Array<[string[], string, string]> = [
      [["migrate", "retry", "--categroy", "x"], "error: unknown option '--categroy'", "usage: fleet migrate retry [options]"],
      [["ops", "list", "--limit", "abc"], "error: option '--limit <n>' argument 'abc' is invalid. expected an integer from 1 to 500", "usage: fleet ops list [options]"],
      [["ops", "list", "--limit", "0"], "expected an integer from 1 to 500", "usage: fleet ops list [options]"],
      [["migrate", "seed-demo", "--files", "10", "--missing", "-3"], "expected an integer ≥ 0", "usage: fleet migrate seed-demo [options]"],
      [["migrate", "retry", "--file", "1e3"], "expected an integer ≥ 1", "usage: fleet migrate retry [options]"],
      [["migrate", "failures", "--limit", "12abc"], "expected an integer from 1 to 10000", "usage: fleet migrate failures [options]"],
      [["inventory", "import", join(dir, "inventory.txt")], "cannot tell the format", "usage: fleet inventory import [options] <file>"],
      [["migrate", "unpack"], "give exactly one of a manifest key, --range <id> or --all", "usage: fleet migrate unpack [options] [manifest]"],
      [["nonsense"], "error: unknown command 'nonsense'", "usage: fleet [options] [command]"],
    ];
    for (const [args, message, usage] of cases) {
      const r = await fleet(env, args);
      expect([args.join(" "), r.code, r.err]).toEqual([args.join(" "), 2, expect.stringContaining(message)]);
      expect(r.err).toContain(usage);
    }
    const missing = await fleet(env, ["ops", "show", "no-such-operation"]);
    expect([missing.code, missing.err]).toEqual([1, expect.stringContaining("no operation no-such-operation")]);
  });

  it("fleet config: every app's variables, the value in effect and its source; secrets redacted", async () => {
    const envFile = join(dir, "fleet.env");
    await writeFile(envFile, ["BATCH_SIZE=2500", "DASHBOARD_SESSION_SECRET=from-the-file-very-secret-value-000000", "SMTP_PASSWORD=hunter2", "WORKER_QUEUES=migration"].join("\n"));
    const r = await fleet(
      { ...env, FLEET_ENV_FILE: envFile, WORKER_QUEUES: "migration,remote", DATABASE_URL: "postgresql://fleet:s3cret@db.example:5432/fleet", ACCOUNTS_CONSENT_TOKEN: "Bearer abc", ACCOUNTS_CONSENT_URL: "https://consent.example/api/v1/consents?access_token=tok123&page=1", SCHEDULE_INVENTORY_SCAN: "on", METRICS_PORT: "abc" },
      ["config", "--json"],
    );
    expect(r.code).toBe(0);
    const { envFile: shown, variables } = JSON.parse(r.out) as { envFile: string; variables: Array<{ name: string; value: string | null; source: string; apps: string[]; defaults?: object; problems?: Record<string, string> }> };
    expect(shown).toBe(envFile);
    const v = Object.fromEntries(variables.map((x) => [x.name, x]));
    expect(v.BATCH_SIZE).toMatchObject({ value: "2500", source: ".env" });
    expect(v.WORKER_QUEUES).toMatchObject({ value: "migration,remote", source: "env", apps: ["worker"] });
    expect(v.COPY_CONCURRENCY).toMatchObject({ value: "64", source: "default" });
    expect(v.DATABASE_URL).toMatchObject({ value: "postgresql://fleet:[redacted]@db.example:5432/fleet", source: "env" });
    expect(v.DASHBOARD_SESSION_SECRET).toMatchObject({ value: "[redacted]", source: ".env", apps: ["dashboard"] });
    expect(v.SMTP_PASSWORD).toMatchObject({ value: "[redacted]", source: ".env" });
    expect(v.ACCOUNTS_CONSENT_TOKEN).toMatchObject({ value: "[redacted]", source: "env" });
    expect(v.ACCOUNTS_CONSENT_URL).toMatchObject({ value: "https://consent.example/api/v1/consents?access_token=[redacted]&page=1", source: "env" });
    expect(v.SCHEDULE_INVENTORY_SCAN).toMatchObject({ value: "on", source: "env", apps: ["scheduler"] });
    expect(v.DESTINATION_KEY_TEMPLATE).toMatchObject({ value: "{path}", source: "default" });
    expect(v.LOG_LEVEL).toMatchObject({ value: "warn", source: "env" });
    expect(v.METRICS_PORT).toMatchObject({ value: "abc", problems: { worker: expect.stringMatching(/number/i) } });
    expect(v.DASHBOARD_USERS).toMatchObject({ value: null, source: "unset", problems: { dashboard: "required" } });
    for (const name of ["WORKER_CONCURRENCY", "DASHBOARD_PORT", "METRICS_HOST", "SCHEDULE_SEED_RANGES", "SCHEDULER_SYNC_INTERVAL", "INVENTORY_WATCH"]) expect(v[name]).toBeDefined();
    expect(r.out).not.toMatch(/hunter2|s3cret|very-secret|Bearer abc|tok123/);
    const text = await fleet({ ...env, FLEET_ENV_FILE: envFile }, ["config", "--app", "cli"]);
    expect(text.out).toMatch(/^BATCH_SIZE\s+2500\s+\.env\s+worker,cli/m);
    expect(text.out).not.toMatch(/^DASHBOARD_PORT/m);
    // With no LOG_LEVEL set, the apps' defaults differ: shown.
    const plain = await fleet({ DATABASE_URL: database.url }, ["config"]);
    expect(plain.out).toMatch(/^LOG_LEVEL\s+info\s+default\s+worker,scheduler,cli,dashboard\s+\(cli default: warn/m);
  });

  it("database errors say what, where, which variable and what to do", async () => {
    const port = await freePort();
    const refused = await fleet({ ...env, DATABASE_URL: `postgresql://postgres@127.0.0.1:${port}/fleet` }, ["migrate", "failures"]);
    expect([refused.code, refused.err]).toEqual([1, `fleet: PostgreSQL at 127.0.0.1:${port} refused the connection: is PostgreSQL running there? (ECONNREFUSED; set DATABASE_URL)\n`]);

    const absent = unusedTestDatabase();
    const noDb = await fleet({ ...env, DATABASE_URL: absent.url }, ["migrate", "status"]);
    expect([noDb.code, noDb.err]).toEqual([1, expect.stringContaining(`has no database "${absent.name}": run \`fleet db migrate\` (it creates the database) or fix DATABASE_URL`)]);

    // A database that exists but was never migrated (the 42P01 of the issue).
    const bare = await createBareDatabase();
    try {
      const unmigrated = await fleet({ ...env, DATABASE_URL: bare.url }, ["migrate", "status"]);
      expect([unmigrated.code, unmigrated.err]).toEqual([1, expect.stringContaining(`the database "${bare.name}" at 127.0.0.1:5432 lacks Fleet's tables or is older than this Fleet (relation "migration_files" does not exist): run \`fleet db migrate\``)]);
      const migrated = await fleet({ ...env, DATABASE_URL: bare.url }, ["db", "migrate", "--json"]);
      expect([migrated.code, JSON.parse(migrated.out)]).toEqual([0, expect.objectContaining({ database: bare.name, where: "127.0.0.1:5432" })]);
    } finally {
      await bare.drop();
    }
  });

  it("Prisma is loaded only by commands that read the database through it", async () => {
    // A preloaded hook lists the modules the process loaded, at its exit.
    const hook = join(dir, "loaded-modules.js");
    await writeFile(hook, `process.on("exit", () => require("node:fs").writeFileSync(process.env.LOADED_OUT, Object.keys(require.cache).join("\\n")));`);
    const loaded = async (args: string[]): Promise<{ code: number | null; prisma: boolean }> => {
      const out = join(dir, `loaded-${args.join("-")}.txt`);
      const r = await fleet({ ...env, NODE_OPTIONS: `--require ${hook}`, LOADED_OUT: out }, args);
      const modules = (await readFile(out, "utf8")).split("\n");
      expect(modules.some((m) => m.endsWith(join("apps", "cli", "dist", "main.js")))).toBe(true);
      // The generated client and Prisma's runtime and adapter (its enums, plain constants, may load).
      return { code: r.code, prisma: modules.some((m) => /[\\/]generated[\\/]prisma[\\/]client\.js$|[\\/]@prisma[\\/]/.test(m)) };
    };
    for (const args of [["--version"], ["--help"], ["config"], ["accounts", "--help"]]) expect([args.join(" "), await loaded(args)]).toEqual([args.join(" "), { code: 0, prisma: false }]);
    // `accounts show` reads the account through Prisma (an unknown one: exit 1 after the query).
    expect(await loaded(["accounts", "show", "nobody"])).toEqual({ code: 1, prisma: true });
  });

  it("a prefix no fleet ever used is reported (exit 1), and looking creates no key", async () => {
    const typo = uniquePrefix("cli-hygiene-typo");
    for (const args of [["queues"], ["ops", "list"], ["migrate", "status"]]) {
      const r = await fleet({ ...env, FLEET_PREFIX: typo }, args);
      expect([args.join(" "), r.code]).toEqual([args.join(" "), 1]);
      expect(r.err).toContain(`no fleet under FLEET_PREFIX=${typo} in Redis at ${testRedisUrl()}: no worker, scheduler or job has used that prefix`);
    }
    // Nothing was there to delete: looking created no key.
    expect(await cleanupPrefix(testRedisUrl(), bullPrefix(typo))).toBe(0);
  });

  it("a prefix with nothing in Redis while the database holds the fleet's ranges says Redis was likely emptied, and what brings it back", async () => {
    // What a FLUSHALL (or a Redis restarted without persistence) leaves for the seconds before a
    // worker notices: the database of a fleet that ran, and no key of it in Redis.
    const ran = await createTestDatabase();
    const emptied = uniquePrefix("cli-hygiene-emptied");
    try {
      const pg = await import("pg");
      const client = new pg.default.Client({ connectionString: ran.url });
      await client.connect();
      await client.query(`INSERT INTO migration_ranges (min_id, max_id) VALUES (1, 1000)`);
      await client.end();
      const r = await fleet({ ...env, DATABASE_URL: ran.url, FLEET_PREFIX: emptied }, ["migrate", "status"]);
      expect(r.code).toBe(1);
      expect(r.err).toContain(`no fleet under FLEET_PREFIX=${emptied} in Redis at ${testRedisUrl()}: no worker, scheduler or job has used that prefix`);
      expect(r.err).toContain("Redis was emptied or restarted without persistence: a running worker or scheduler notices within RECOVERY_INTERVAL");
      // The typo's own case (a database without ranges) does not say so: the test above's database.
      const typo = await fleet({ ...env, FLEET_PREFIX: emptied }, ["migrate", "status"]);
      expect([typo.code, typo.err.includes("Redis was emptied")]).toEqual([1, false]);
      expect(await cleanupPrefix(testRedisUrl(), bullPrefix(emptied))).toBe(0);
    } finally {
      await ran.drop();
    }
  });
});

/** An empty database (no Fleet schema), created and dropped here. */
async function createBareDatabase(): Promise<TestDatabase> {
  const db = unusedTestDatabase();
  const pg = await import("pg");
  const admin = new pg.default.Client({ connectionString: db.url.replace(/\/[^/]+$/, "/postgres") });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${db.name}"`);
  await admin.end();
  return db;
}
