import { execFile, spawn } from "node:child_process";
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { rm, writeFile } from "node:fs/promises";
import { createPool } from "@fleet/db/pool";
import { join } from "node:path";
import { promisify } from "node:util";
import { bullPrefix } from "@fleet/core/redis";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { startAccountSite } from "../../../packages/jobs/test/accountRunFixture";
import type { AccountSite } from "../../../packages/jobs/test/accountRunFixture";

/** `fleet accounts …` as an operator runs it: the built CLI against real Postgres, Redis, HTTP and sshd. */

const exec = promisify(execFile);
const CLI = join(__dirname, "..", "dist", "main.js");
const WORKER = join(__dirname, "..", "..", "worker", "dist", "main.js");

let db: TestDatabase;
let site: AccountSite;
let api: Server;
let env: NodeJS.ProcessEnv;
const prefix = uniquePrefix("cli-accounts");

beforeAll(async () => {
  db = await createTestDatabase();
  site = await startAccountSite();
  const items = ["ok1", "ok2", "ok3"].map((id) => ({ id, email: `${id}@example.org`, name: `User ${id}`, consentedAt: "2026-11-29T09:00:00Z" }));
  api = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ items, nextCursor: null }));
  });
  await new Promise<void>((r) => api.listen(0, "127.0.0.1", r));
  env = {
    PATH: process.env.PATH,
    FLEET_ENV_FILE: join(__dirname, "no-such.env"),
    LOG_LEVEL: "silent",
    REDIS_URL: testRedisUrl(),
    FLEET_PREFIX: prefix,
    DATABASE_URL: db.url,
    ACCOUNTS_CONSENT_URL: `http://127.0.0.1:${(api.address() as AddressInfo).port}/consents`,
    ...site.env,
  };
});

afterAll(async () => {
  await new Promise((r) => api?.close(r));
  await site?.ssh.stop();
  if (site) await rm(site.dir, { recursive: true, force: true });
  await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
  await db?.drop();
});

const fleet = async (...args: string[]) => JSON.parse((await exec(process.execPath, [CLI, "accounts", ...args, "--json"], { env })).stdout) as Record<string, unknown>;

describe("fleet accounts", () => {
  it("sync, plan, status, cancel, server, run", async () => {
    expect(await fleet("sync")).toMatchObject({ pages: 1, inserted: 3 });
    expect(await fleet("plan", "--date", "2026-11-30")).toMatchObject({ created: true, accounts: 3, emails: 3, perServer: { exp1: 3, sync1: 3 } });
    expect(await fleet("plan", "--date", "2026-11-30")).toMatchObject({ created: false, emails: 0 });

    const status = await fleet("status");
    expect(status.accounts).toMatchObject({ SCHEDULED: 3, QUEUED: 0 });
    expect((status.batches as Array<{ runDate: string; status: string; assignments: unknown[] }>)[0]).toMatchObject({ runDate: "2026-11-30", status: "PLANNED" });
    expect((status.notifications as Record<string, number>).PENDING).toBe(3);

    expect(await fleet("cancel", "--account", "ok2", "--reason", "user asked")).toMatchObject({ cancelled: 1, abortRequests: 1 });
    const { stdout } = await exec(process.execPath, [CLI, "accounts", "server", "mig2", "--disable"], { env });
    expect(stdout).toBe("mig2 disabled\n");

    expect(await fleet("run", "--date", "2026-11-30")).toMatchObject({ started: true, accounts: 2 });
    expect(await fleet("run", "--date", "2026-11-30")).toMatchObject({ started: false });
    const after = await fleet("status");
    expect(after.accounts).toMatchObject({ SCHEDULED: 2, CANCELLED: 1 });
    expect((after.servers as Array<{ name: string; enabled: boolean }>).find((s) => s.name === "mig2")!.enabled).toBe(false);
    expect((after.batches as Array<{ steps: unknown }>)[0]!.steps).toEqual([
      { name: "export", done: 0 },
      { name: "migrate", done: 0 },
      { name: "directory-sync", done: 0 },
    ]);
    const text = (await exec(process.execPath, [CLI, "accounts", "status"], { env })).stdout;
    expect(text).toContain("steps: export 0/3, migrate 0/3, directory-sync 0/3");
    expect(text).toMatch(/migration +mig1 +PLANNED +\d/);

    // The cancelled account goes back to the queue; a scheduled one cannot.
    expect((await exec(process.execPath, [CLI, "accounts", "requeue", "ok2"], { env })).stdout).toBe("ok2 queued again\n");
    const refused = await exec(process.execPath, [CLI, "accounts", "requeue", "ok1"], { env }).catch((err: { code: number; stderr: string }) => err);
    expect(refused).toMatchObject({ code: 1, stderr: expect.stringContaining("ok1 is SCHEDULED") });
    expect((await fleet("status")).accounts).toMatchObject({ QUEUED: 1, SCHEDULED: 2, CANCELLED: 0 });
  }, 150_000);

  it("group-update, a real worker runs the night, then list/show/requeue and today's daily marker", async () => {
    expect(await fleet("group-update", "--date", "2026-11-30")).toMatchObject({ added: 2, held: 0, failed: 0 });
    expect(await fleet("group-update", "--date", "2026-11-30")).toMatchObject({ skipped: "already done" });
    // The worker app itself (no SMTP here: ACCOUNTS_NOTICE_POLICY=none lets steps run without their email).
    const worker = spawn(process.execPath, [WORKER], { env: { ...env, WORKER_QUEUES: "maintenance,remote", METRICS_PORT: "0", SOURCE_URL: site.dir, DESTINATION_URL: site.dir, ACCOUNTS_NOTICE_POLICY: "none", ACCOUNTS_RECHECK: "1s", LOG_LEVEL: "info" }, stdio: ["ignore", "pipe", "pipe"] });
    const workerLog: string[] = [];
    worker.stdout.on("data", (d: Buffer) => workerLog.push(d.toString()));
    worker.stderr.on("data", (d: Buffer) => workerLog.push(d.toString()));
    try {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const s = await fleet("status");
        if ((s.accounts as Record<string, number>).DONE === 2) break;
        if (Date.now() > deadline || worker.exitCode !== null) throw new Error(`the run did not finish (worker exit ${worker.exitCode}): ${JSON.stringify(s.accounts)}\n${workerLog.join("").slice(-6000)}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    } finally {
      if (worker.exitCode === null && worker.signalCode === null) {
        const exited = new Promise((r) => worker.once("exit", r));
        worker.kill("SIGTERM");
        await exited;
      }
    }
    const list = JSON.parse((await exec(process.execPath, [CLI, "accounts", "list", "--batch", "1", "--json"], { env })).stdout) as Array<{ externalId: string; status: string; stepName: string | null; stepPhase: string | null }>;
    expect(list.map((a) => [a.externalId, a.status, a.stepName, a.stepPhase])).toEqual([
      ["ok1", "DONE", "directory-sync", "DONE"],
      ["ok2", "QUEUED", null, null],
      ["ok3", "DONE", "directory-sync", "DONE"],
    ]);
    const text = (await exec(process.execPath, [CLI, "accounts", "list", "--status", "done"], { env })).stdout;
    expect(text.split("\n").filter(Boolean)).toHaveLength(2);
    const show = (await exec(process.execPath, [CLI, "accounts", "show", "ok1"], { env })).stdout;
    expect(show).toContain("account ok1");
    expect(show).toMatch(/batch 1 #0 export: DONE on exp1, attempt 1/);
    expect(show).toMatch(/batch 1 #1 migrate: DONE on mig1, attempt 1, 2 checks/);
    expect(show).toContain("| stdout: exported ok1");
    expect(show).toContain("group update: added to migrating-tonight on sync1");
    const missing = await exec(process.execPath, [CLI, "accounts", "show", "nobody"], { env }).catch((err: { code: number; stderr: string }) => err);
    expect(missing).toMatchObject({ code: 1, stderr: expect.stringContaining("no account") });
    expect(await fleet("requeue", "--status", "FAILED")).toEqual({ requeued: [] });
    expect(await fleet("requeue", "--batch", "1", "--category", "timeout")).toEqual({ requeued: [] });
    // A step run by hand for today records the daily marker, so the scheduler's catch-up does not repeat it.
    // (Today in UTC, the fleet's default zone, as the command saw it: read before and after it, for a run across midnight.)
    const dayBefore = new Date().toISOString().slice(0, 10);
    await fleet("sync");
    const dayAfter = new Date().toISOString().slice(0, 10);
    const marker = await exec(process.execPath, [CLI, "accounts", "status", "--json"], { env });
    expect(JSON.parse(marker.stdout)).toBeTruthy();
    const pg = createPool({ connectionString: db.url, max: 1 });
    try {
      const { rows } = await pg.query(`SELECT cursor FROM sync_state WHERE key = 'daily:accounts-sync'`);
      expect(rows).toHaveLength(1);
      expect([dayBefore, dayAfter]).toContain(rows[0].cursor);
    } finally {
      await pg.end();
    }
  }, 240_000);

  it("status --watch prints the report again every interval until Ctrl-C", async () => {
    const watch = spawn(process.execPath, [CLI, "accounts", "status", "--watch", "--interval", "300ms"], { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    watch.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 60_000;
    while ((out.match(/^== \d{4}-/gm) ?? []).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const exited = new Promise<number | null>((r) => watch.once("exit", (code) => r(code)));
    watch.kill("SIGINT");
    expect(await exited).toBe(0);
    expect((out.match(/^== \d{4}-/gm) ?? []).length).toBeGreaterThanOrEqual(2);
    expect(out).toContain("accounts: ");
  }, 90_000);

  it("a worker whose workflow file is broken exits 2 with the line of the YAML error", async () => {
    const bad = join(site.dir, "broken.yaml");
    await writeFile(bad, "servers:\n  mig1: { ssh: box\nsteps: []\n");
    const r = await exec(process.execPath, [WORKER], { env: { ...env, ACCOUNTS_WORKFLOW_FILE: bad, METRICS_PORT: "0" } }).catch((err: { code: number; stderr: string }) => err);
    expect(r).toMatchObject({ code: 2, stderr: expect.stringMatching(/^fleet worker: .*ACCOUNTS_WORKFLOW_FILE .*is not valid YAML: .*at line \d+, column \d+/s) });
  });

  it("says what to set when the workflow file is missing, and refuses ambiguous cancels", async () => {
    const { ACCOUNTS_WORKFLOW_FILE: _unset, ...without } = env;
    const planned = await exec(process.execPath, [CLI, "accounts", "plan"], { env: without }).catch((err: { code: number; stderr: string }) => err);
    expect(planned).toMatchObject({ code: 1, stderr: expect.stringContaining("ACCOUNTS_WORKFLOW_FILE") });
    const cancel = await exec(process.execPath, [CLI, "accounts", "cancel"], { env }).catch((err: { code: number; stderr: string }) => err);
    expect(cancel).toMatchObject({ code: 2, stderr: expect.stringContaining("exactly one of --account") });
  });
});
