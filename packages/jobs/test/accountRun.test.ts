import { access, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setServerEnabled } from "@fleet/db/sql/migrationServers";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import { startSmtpServer } from "@fleet/testing/smtpServer";
import type { SmtpTestServer } from "@fleet/testing/smtpServer";
import { cancelAccountMigrations } from "../src/accounts/cancelAccounts";
import type { RecoveryWatch } from "../src/maintenance/recoveryWatch";
import { createPipelineHarness, finishedJob, waitFor, watchRecovery } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { startConsentApi } from "./consentApiFixture";
import type { ConsentFixture } from "./consentApiFixture";
import { accountStates, insertAccounts } from "./accountsFixture";
import { startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";

/**
 * A whole account-migration day on real servers on loopback: the consent API (HTTP), sshd
 * running scripts that play the export / migration / directory tools, smtp-server capturing
 * mail, Postgres and Redis. The daily jobs are enqueued as the scheduler would, and run by a
 * real JobRunner.
 */

const RUN_DATE = "2026-11-30";
const HOSTILE = "Eve'; rm -rf / `touch /tmp/fleet-pwned-tick` $(touch /tmp/fleet-pwned-dollar) \"x\"";

let site: AccountSite;
let smtp: SmtpTestServer;
let api: ConsentFixture;
let h: PipelineHarness;

const consent = (id: string, name = `User ${id}`) => ({ id, email: `${id}@example.org`, name, consentedAt: "2026-11-29T09:00:00Z" });

beforeAll(async () => {
  await rm("/tmp/fleet-pwned-tick", { force: true });
  await rm("/tmp/fleet-pwned-dollar", { force: true });
  site = await startAccountSite();
  smtp = await startSmtpServer();
  api = await startConsentApi([
    [consent("ok1"), consent("evil", HOSTILE), consent("fail-export1")],
    [consent("fail-mig1"), consent("hang-sync1"), consent("ok2")],
  ]);
});

afterAll(async () => {
  await h?.close();
  await api?.close();
  await smtp?.stop();
  await site?.ssh.stop();
  if (site) await rm(site.dir, { recursive: true, force: true });
});

async function harness(label: string, env: Record<string, string> = {}) {
  return createPipelineHarness(label, {
    ...site.env,
    ...env,
    ACCOUNTS_CONSENT_URL: api.url,
    SMTP_HOST: smtp.host,
    SMTP_PORT: String(smtp.port),
    NOTIFY_OPERATORS: "ops@example.org",
    NOTIFY_BACKOFF: "200ms",
    FLEET_TZ: "Europe/Berlin",
  });
}

async function run(name: "accounts-sync" | "accounts-prepare" | "accounts-group-update" | "accounts-run") {
  const job = await h.runtime.deps.jobs.enqueue(name, { runDate: RUN_DATE }, { jobId: `${name}-${Math.random().toString(36).slice(2)}` });
  const { state, job: done } = await finishedJob(h.runtime, "maintenance", job.id!, 90_000);
  if (state !== "completed") throw new Error(`${name} ${state}: ${done.failedReason}`);
  return done.returnvalue as Record<string, unknown>;
}

const calls = async () => (await readFile(join(site.state, "calls"), "utf8")).split("\n").filter(Boolean);
const batch = async () => (await h.runtime.db.query(`SELECT id, status, planned, done, failed, cancelled FROM migration_batch WHERE run_date = $1`, [RUN_DATE])).rows[0];

describe("an account-migration day", () => {
  it("syncs, plans, emails, updates the group, runs every step and reports — and a re-run changes nothing", async () => {
    h = await harness("account-day");
    await h.startRunner({ concurrency: 4 });

    expect(await run("accounts-sync")).toMatchObject({ inserted: 6, rejected: 0 });
    expect(await run("accounts-prepare")).toMatchObject({ created: true, accounts: 6, emails: 6 });
    await waitFor(async () => Object.values(await accountStates(h.runtime)).every((s) => s === "NOTIFIED"), 60_000, "pre-migration emails sent");
    expect(smtp.messages.map((m) => m.to[0]).sort()).toEqual(["evil", "fail-export1", "fail-mig1", "hang-sync1", "ok1", "ok2"].map((id) => `${id}@example.org`).sort());

    expect(await run("accounts-group-update")).toMatchObject({ added: 6, failed: 0 });
    expect(await run("accounts-run")).toMatchObject({ started: true, accounts: 6 });
    await waitFor(async () => (await batch())?.status === "DONE", 90_000, "the batch run to finish");

    expect(await accountStates(h.runtime)).toEqual({
      ok1: "DONE",
      evil: "DONE",
      "fail-export1": "FAILED",
      "fail-mig1": "FAILED",
      "hang-sync1": "FAILED",
      ok2: "DONE",
    });
    expect(await batch()).toMatchObject({ planned: 6, done: 3, failed: 3, cancelled: 0 });
    const { rows: errors } = await h.runtime.db.query<{ external_id: string; last_error: string }>(`SELECT external_id, last_error FROM migration_queue WHERE status = 'FAILED' ORDER BY external_id`);
    expect(errors.map((e) => [e.external_id, e.last_error])).toEqual([
      ["fail-export1", expect.stringMatching(/^export on exp1: .*mailbox not found/)],
      ["fail-mig1", expect.stringMatching(/^migrate on mig\d: .*status check reports failure: FAILED: quota/)],
      ["hang-sync1", expect.stringMatching(/^directory-sync on sync1: .*time/i)],
    ]);

    // The roles a failed account never reached are SKIPPED, not CANCELLED (an operator's word).
    const { rows: skipped } = await h.runtime.db.query(
      `SELECT a.role, a.state::text AS state FROM batch_assignment a JOIN migration_queue q ON q.id = a.account_id WHERE q.external_id = 'fail-export1' ORDER BY a.role`,
    );
    expect(skipped).toEqual([{ role: "export", state: "FAILED" }, { role: "migration", state: "SKIPPED" }, { role: "sync", state: "SKIPPED" }]);

    // Steps ran in order, and only for accounts whose previous step succeeded.
    const log = await calls();
    expect(log.filter((l) => l.startsWith("export")).length).toBe(6);
    expect(log.filter((l) => l.startsWith("mig-start"))).toHaveLength(5);
    expect(log.filter((l) => l.startsWith("sync [")).sort()).toEqual(["sync [evil]", "sync [hang-sync1]", "sync [hang-sync1]", "sync [ok1]", "sync [ok2]"]);
    // The hostile name arrived as one literal word and no shell ran what it holds.
    expect(log).toContain(`export [evil] [${HOSTILE}]`);
    await expect(access("/tmp/fleet-pwned-tick")).rejects.toThrow();
    await expect(access("/tmp/fleet-pwned-dollar")).rejects.toThrow();
    expect(log.filter((l) => l.startsWith("group [migrating-tonight]"))).toHaveLength(6);

    // Every step's start and end (with the output summary) is in migration_log.
    const { rows: steps } = await h.runtime.db.query<{ subject: string; message: string; details: { output?: string } | null }>(
      `SELECT subject, message, details FROM migration_log WHERE subject = 'account:ok1' ORDER BY id`,
    );
    expect(steps.map((s) => s.message.replace(/ in \d+ ms$/, "").replace(/mig\d/, "migN"))).toEqual(
      expect.arrayContaining(["export: started on exp1", "export: done on exp1", "migrate: started on migN", "migrate: done on migN", "directory-sync: started on sync1", "directory-sync: done on sync1"]),
    );
    expect(steps.find((s) => s.message.startsWith("export: done"))!.details!.output).toContain("exported ok1");
    // Balanced: the two migration servers share the accounts.
    const { rows: perServer } = await h.runtime.db.query<{ server: string; n: number }>(`SELECT server, count(*)::int AS n FROM batch_assignment WHERE role = 'migration' GROUP BY server ORDER BY server`);
    expect(perServer).toEqual([{ server: "mig1", n: 3 }, { server: "mig2", n: 3 }]);

    // The operators' summary.
    await waitFor(async () => smtp.messages.find((m) => m.to[0] === "ops@example.org"), 60_000, "the operator summary");
    const summary = smtp.messages.find((m) => m.to[0] === "ops@example.org")!;
    expect(summary.header("subject")).toBe(`Batch ${RUN_DATE}: 3 done, 3 failed, 0 cancelled`);
    expect(summary.raw).toContain("fail-mig1 <fail-mig1@example.org>");

    // The whole day again (a second replica, a re-run by hand): nothing new happens.
    const before = { calls: (await calls()).length, mails: smtp.messages.length };
    expect(await run("accounts-sync")).toMatchObject({ inserted: 0, updated: 0 });
    expect(await run("accounts-prepare")).toMatchObject({ created: false, emails: 0 });
    expect(await run("accounts-group-update")).toMatchObject({ skipped: "already done" });
    expect(await run("accounts-run")).toMatchObject({ started: false });
    await new Promise((r) => setTimeout(r, 1_000));
    expect({ calls: (await calls()).length, mails: smtp.messages.length }).toEqual(before);
  }, 240_000);
});

describe("cancel and servers going away", () => {
  let other: PipelineHarness | undefined;
  afterEach(async () => {
    await other?.close();
    other = undefined;
  });

  const prepared = async (label: string, ids: string[]) => {
    // A held step (waiting for its pre-migration email) looks again after 1 s, not 30.
    other = await harness(label, { ACCOUNTS_RECHECK: "1s" });
    await insertAccounts(other.runtime, ids.map((externalId) => ({ externalId })));
    await other.startRunner({ concurrency: 4 });
    return other;
  };
  const runIn = async (x: PipelineHarness, name: "accounts-prepare" | "accounts-run" | "accounts-reconcile") => {
    const job = await x.runtime.deps.jobs.enqueue(name, name === "accounts-reconcile" ? {} : { runDate: RUN_DATE }, { jobId: `${name}-${Math.random().toString(36).slice(2)}` });
    const { state, job: done } = await finishedJob(x.runtime, "maintenance", job.id!, 90_000);
    if (state !== "completed") throw new Error(`${name} ${state}: ${done.failedReason}`);
    return done.returnvalue as Record<string, unknown>;
  };
  const batchOf = async (x: PipelineHarness) => (await x.runtime.db.query(`SELECT id, status, planned, done, failed, cancelled, postponed FROM migration_batch WHERE run_date = $1`, [RUN_DATE])).rows[0];

  it("cancelling an account while its step runs aborts the step; the account and its assignments end CANCELLED and the batch closes", async () => {
    const x = await prepared("account-cancel", ["hang-mig-c1", "cancel-ok1"]);
    await runIn(x, "accounts-run");
    const { rows } = await x.runtime.db.query<{ id: number }>(`SELECT id FROM migration_queue WHERE external_id = 'hang-mig-c1'`);
    await waitFor(async () => (await x.runtime.db.query(`SELECT 1 FROM migration_log WHERE subject = 'account:hang-mig-c1' AND message LIKE 'migrate: started%'`)).rowCount, 60_000, "the migration step to start");
    const cancelledAt = Date.now();
    const result = await cancelAccountMigrations({ db: x.runtime.db, redis: x.runtime.redis, prefix: x.runtime.prefix, target: { accountId: rows[0]!.id }, reason: "operator asked" });
    expect(result).toMatchObject({ cancelled: 1, abortRequests: 1 });
    await waitFor(async () => (await batchOf(x))?.status === "DONE", 30_000, "the batch to close");
    // The check would have polled until its 60 s timeout; the abort ended it long before.
    expect(Date.now() - cancelledAt).toBeLessThan(20_000);
    expect(await accountStates(x.runtime)).toEqual({ "hang-mig-c1": "CANCELLED", "cancel-ok1": "DONE" });
    expect(await batchOf(x)).toMatchObject({ done: 1, failed: 0, cancelled: 1 });
    const { rows: open } = await x.runtime.db.query(`SELECT role, state FROM batch_assignment WHERE account_id = $1 ORDER BY role`, [rows[0]!.id]);
    expect(open).toEqual([
      { role: "export", state: "DONE" },
      { role: "migration", state: "CANCELLED" },
      { role: "sync", state: "CANCELLED" },
    ]);
    expect((await calls()).filter((l) => l === "sync [hang-mig-c1]")).toEqual([]);
  }, 180_000);

  it("cancelling a batch before its run: nothing starts", async () => {
    const x = await prepared("account-cancel-batch", ["cb1", "cb2"]);
    const plan = await runIn(x, "accounts-prepare");
    const before = (await calls()).length;
    expect(await cancelAccountMigrations({ db: x.runtime.db, redis: x.runtime.redis, prefix: x.runtime.prefix, target: { batchId: plan.batchId as number }, reason: "maintenance" })).toMatchObject({ cancelled: 2 });
    expect(await runIn(x, "accounts-run")).toMatchObject({ started: false });
    expect(await accountStates(x.runtime)).toEqual({ cb1: "CANCELLED", cb2: "CANCELLED" });
    expect((await batchOf(x))?.status).toBe("CANCELLED");
    expect((await calls()).length).toBe(before);
  }, 180_000);

  it("a migration server disabled after planning: its accounts move to the other server of the role; with none left they go back to the queue", async () => {
    const x = await prepared("account-disabled", ["d1", "d2", "d3", "d4"]);
    await runIn(x, "accounts-prepare");
    await setServerEnabled(x.runtime.db, "mig2", false);
    await runIn(x, "accounts-run");
    await waitFor(async () => (await batchOf(x))?.status === "DONE", 90_000, "the batch to finish");
    expect(Object.values(await accountStates(x.runtime))).toEqual(["DONE", "DONE", "DONE", "DONE"]);
    const { rows } = await x.runtime.db.query<{ server: string }>(`SELECT DISTINCT server FROM batch_assignment WHERE role = 'migration'`);
    expect(rows).toEqual([{ server: "mig1" }]);
    const { rows: moved } = await x.runtime.db.query(`SELECT count(*)::int AS n FROM migration_log WHERE message = 'migrate: server mig2 is disabled; moved to mig1'`);
    expect(moved[0]).toEqual({ n: 2 });
  }, 180_000);

  it("no enabled server left for a role: the accounts are POSTPONED (counted in the batch, told by email) and planned again the next night", async () => {
    const x = await prepared("account-no-server", ["n1", "n2"]);
    await runIn(x, "accounts-prepare");
    await setServerEnabled(x.runtime.db, "mig1", false);
    await setServerEnabled(x.runtime.db, "mig2", false);
    await runIn(x, "accounts-run");
    await waitFor(async () => (await batchOf(x))?.status === "DONE", 90_000, "the batch to finish");
    const { rows } = await x.runtime.db.query(`SELECT external_id, status, last_error FROM migration_queue ORDER BY id`);
    expect(rows).toEqual([
      { external_id: "n1", status: "POSTPONED", last_error: "migrate: no enabled migration server with room" },
      { external_id: "n2", status: "POSTPONED", last_error: "migrate: no enabled migration server with room" },
    ]);
    expect(await batchOf(x)).toMatchObject({ planned: 2, done: 0, failed: 0, cancelled: 0, postponed: 2 });
    await waitFor(async () => smtp.messages.filter((m) => /postponed/.test(m.header("subject") ?? "") && /^n\d@/.test(m.to[0] ?? "")).length === 2, 60_000, "the postponed emails");
    // The next night takes them again, like queued accounts; the old batch still counts them.
    await setServerEnabled(x.runtime.db, "mig1", true);
    const next = await x.runtime.deps.jobs.enqueue("accounts-prepare", { runDate: "2026-12-01" }, { jobId: "prepare-next" });
    expect((await finishedJob(x.runtime, "maintenance", next.id!, 60_000)).job.returnvalue).toMatchObject({ created: true, accounts: 2 });
    expect(await batchOf(x)).toMatchObject({ postponed: 2 });
  }, 180_000);

  it("a running batch whose flow Redis really lost (FLUSHALL mid-run) is re-derived from Postgres: steps already done do not run again", async () => {
    // The fleet's own Redis, emptied for real while the flow runs; the recovery watch every
    // process runs notices (epoch key) and re-derives the flow (accounts-reconcile).
    const redis = await startPrivateRedis();
    let watch: RecoveryWatch | undefined;
    try {
      // The site's workflow with status checks every 100 ms instead of 200 ms: slow-rc2's ~40
      // checks take ~4 s instead of ~8 s, still long after the loss below (right after its start).
      const workflow = (await readFile(site.env.ACCOUNTS_WORKFLOW_FILE!, "utf8")).replace('every: 200ms, done: "^COMPLETED"', 'every: 100ms, done: "^COMPLETED"');
      expect(workflow).toContain('every: 100ms, done: "^COMPLETED"');
      const workflowFile = join(site.dir, "workflow-reconcile.yaml");
      await writeFile(workflowFile, workflow);
      // A step held for its pre-migration email (the run can start before the sender has sent
      // it: nothing wakes the held step) looks again after 1 s, not the default 30.
      other = await harness("account-reconcile", { REDIS_URL: redis.url, ACCOUNTS_WORKFLOW_FILE: workflowFile, ACCOUNTS_RECHECK: "1s" });
      const x = other;
      await insertAccounts(x.runtime, ["rc1", "slow-rc2"].map((externalId) => ({ externalId })));
      await x.startRunner({ concurrency: 4 });
      watch = watchRecovery(x);
      await runIn(x, "accounts-prepare");
      expect(await runIn(x, "accounts-run")).toMatchObject({ started: true });
      // slow-rc2 has exported and its migration is under way (it takes ~40 status checks).
      await waitFor(async () => (await calls()).includes("mig-start [slow-rc2]") || undefined, 60_000, "slow-rc2's migration to start");
      const before = (await x.runtime.db.query(`SELECT steps_done FROM migration_queue WHERE external_id = 'slow-rc2'`)).rows[0];
      expect(before.steps_done).toBeGreaterThanOrEqual(1);
      expect((await batchOf(x))?.status).toBe("RUNNING");
      // Its migration is still under way as Redis loses everything.
      const { rows: migrating } = await x.runtime.db.query(`SELECT s.phase FROM account_step s JOIN migration_queue q ON q.id = s.account_id WHERE q.external_id = 'slow-rc2' AND s.name = 'migrate'`);
      expect(migrating).toEqual([{ phase: expect.stringMatching(/^(RUNNING|POLLING)$/) }]);
      await redis.flushAll();

      await waitFor(async () => (await batchOf(x))?.status === "DONE", 90_000, "the re-derived run to finish");
      expect(await accountStates(x.runtime)).toEqual({ rc1: "DONE", "slow-rc2": "DONE" });
      const log = await calls();
      // Exports finished before the loss are not run again; every account is synced.
      expect(log.filter((l) => l.startsWith("export [") && /rc[12]/.test(l)).sort()).toEqual(["export [rc1] [User rc1]", "export [slow-rc2] [User slow-rc2]"]);
      expect(log.filter((l) => l.startsWith("sync [") && /rc[12]/.test(l)).length).toBeGreaterThanOrEqual(2);
      expect(x.logLines.some((l) => l.includes("Redis lost the fleet's state"))).toBe(true);
      // The batch is done now: nothing left to restore.
      expect(await runIn(x, "accounts-reconcile")).toEqual({ restored: [] });
    } finally {
      await watch?.stop();
      await other?.close();
      other = undefined;
      await redis.stop();
    }
  }, 180_000);

  it("a status check that never reports done fails its step with a timeout after its retries", async () => {
    // The migrate step of the site's workflow, with a 1.5 s check timeout and 2 attempts.
    const text = (await readFile(site.env.ACCOUNTS_WORKFLOW_FILE!, "utf8"))
      .replace('every: 200ms, done: "^COMPLETED", failed: "^FAILED", timeout: 60s }', 'every: 100ms, done: "^COMPLETED", failed: "^FAILED", timeout: 1500ms }\n    cancel: fx-mig-cancel {externalId}\n    retry: { attempts: 2, backoff: [50ms] }');
    const file = join(site.dir, "workflow-timeout.yaml");
    await writeFile(file, text);
    // ACCOUNTS_RECHECK 1 s: a step held for its pre-migration email looks again after 1 s, not 30.
    other = await createPipelineHarness("account-check-timeout", { ...site.env, ACCOUNTS_WORKFLOW_FILE: file, SMTP_HOST: smtp.host, SMTP_PORT: String(smtp.port), NOTIFY_BACKOFF: "200ms", ACCOUNTS_RECHECK: "1s" });
    await insertAccounts(other.runtime, [{ externalId: "hang-mig-t1" }]);
    await other.startRunner({ concurrency: 4 });
    const started = Date.now();
    await runIn(other, "accounts-prepare");
    await runIn(other, "accounts-run");
    await waitFor(async () => (await batchOf(other!))?.status === "DONE", 90_000, "the batch to finish");
    expect(await accountStates(other.runtime)).toEqual({ "hang-mig-t1": "FAILED" });
    const { rows } = await other.runtime.db.query(`SELECT name, phase, attempt, category FROM account_step WHERE step = 1`);
    expect(rows).toEqual([{ name: "migrate", phase: "FAILED", attempt: 2, category: "timeout" }]);
    const { rows: errors } = await other.runtime.db.query<{ last_error: string }>(`SELECT last_error FROM migration_queue`);
    expect(errors[0]!.last_error).toMatch(/not done after 1500 ms of status checks/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(3_000);
    expect((await calls()).filter((l) => l === "mig-start [hang-mig-t1]")).toHaveLength(2);
    const { rows: retries } = await other.runtime.db.query(`SELECT message FROM migration_log WHERE subject = 'account:hang-mig-t1' AND message LIKE 'migrate: attempt%'`);
    expect(retries).toEqual([{ message: "migrate: attempt 1 failed (timeout); retrying in 50 ms" }]);
    // The migration never reported done, so it may still run on its server: the account's
    // cancel runs there (account-cleanup), as for a cancelled account.
    await waitFor(async () => (await other!.runtime.db.query(`SELECT 1 FROM account_step WHERE step = 1 AND cancel_state = 'DONE'`)).rowCount || undefined, 30_000, "the cancel of the unfinished migration");
    expect((await calls()).filter((l) => l === "mig-cancel [hang-mig-t1]")).toHaveLength(1);
  }, 120_000);
});
