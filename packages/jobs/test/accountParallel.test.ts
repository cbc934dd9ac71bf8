import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startSmtpServer } from "@fleet/testing/smtpServer";
import { cleanupPrefix, testRedisUrl } from "@fleet/testing/testRedis";
import type { SmtpTestServer } from "@fleet/testing/smtpServer";
import { createPipelineHarness, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { insertAccounts } from "./accountsFixture";
import { startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";

/**
 * Polled steps give their worker back between checks: many accounts are in progress at once on
 * one worker with concurrency 2, and the workflow's per-server `concurrency` bounds how many
 * run on each server. Real sshd, SMTP, Postgres and Redis.
 */

const RUN_DATE = "2026-11-30";
let site: AccountSite;
let smtp: SmtpTestServer;
let h: PipelineHarness | undefined;

beforeAll(async () => {
  site = await startAccountSite();
  smtp = await startSmtpServer();
});
afterEach(async () => {
  await h?.close();
  h = undefined;
});
afterAll(async () => {
  await smtp?.stop();
  await site?.ssh.stop();
  if (site) await rm(site.dir, { recursive: true, force: true });
});

/** One polled step "migrate" on server mig1 (capacity and concurrency given), checked every `every`. */
async function night(label: string, accounts: number, server: { capacity: number; concurrency: number }, every: string) {
  const file = join(site.dir, `workflow-${label}.yaml`);
  await writeFile(
    file,
    `servers:
  mig1: { ssh: box, role: migration, capacity: ${server.capacity}, concurrency: ${server.concurrency} }
steps:
  - name: migrate
    role: migration
    command: fx-mig-start {externalId}
    check: { command: "fx-mig-status {externalId}", every: ${every}, done: "^COMPLETED", failed: "^FAILED", timeout: 10m }
`,
  );
  h = await createPipelineHarness(label, { ...site.env, ACCOUNTS_WORKFLOW_FILE: file, SMTP_HOST: smtp.host, SMTP_PORT: String(smtp.port), NOTIFY_BACKOFF: "200ms", ACCOUNTS_RECHECK: "1s" });
  await insertAccounts(h.runtime, Array.from({ length: accounts }, (_, i) => ({ externalId: `${label}-${i}` })));
  await h.startRunner({ concurrency: 2 });
  for (const name of ["accounts-prepare", "accounts-run"] as const) {
    const job = await h.runtime.deps.jobs.enqueue(name, { runDate: RUN_DATE }, { jobId: `${name}-${label}` });
    const { state, job: done } = await finishedJob(h.runtime, "maintenance", job.id!, 60_000);
    if (state !== "completed") throw new Error(`${name} ${state}: ${done.failedReason}`);
  }
  return h;
}

const inProgress = async (x: PipelineHarness) => (await x.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM account_step WHERE phase IN ('RUNNING', 'POLLING')`)).rows[0]!.n;
const done = async (x: PipelineHarness) => (await x.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_queue WHERE status = 'DONE'`)).rows[0]!.n;

describe("polled steps without holding workers", () => {
  it("50 accounts with 10-second polled steps are all in progress at once on one worker with concurrency 2", async () => {
    const x = await night("fifty", 50, { capacity: 50, concurrency: 50 }, "10s");
    const started = Date.now();
    // Each migration needs two status checks 10 s apart, so none ends before ~20 s after it
    // started. Holding a slot per poll, 2 slots would serve 2 accounts at a time (25 × 20 s);
    // released between checks, all 50 are in progress together (starting them takes a few
    // seconds) and the night takes ~20 s more than starting them.
    await waitFor(async () => (await inProgress(x)) === 50, 19_000, "all 50 migrations to be in progress together");
    process.stdout.write(`50 polled accounts: all in progress ${Date.now() - started} ms after the run started\n`);
    expect(await done(x)).toBe(0);
    const active = await x.runtime.deps.jobs.queue("remote").getActiveCount();
    expect(active).toBeLessThanOrEqual(2);
    await waitFor(async () => (await done(x)) === 50, 150_000, "all 50 accounts done");
    const elapsed = Date.now() - started;
    expect(elapsed).toBeLessThan(2 * 60_000); // the serial way: 8.3 minutes
    const { rows } = await x.runtime.db.query<{ checks: number }>(`SELECT DISTINCT checks FROM account_step`);
    expect(rows).toEqual([{ checks: 2 }]);
  }, 300_000);

  it("a server's concurrency bounds the migrations in progress on it; the others wait for a slot and then run", async () => {
    const x = await night("bounded", 8, { capacity: 8, concurrency: 3 }, "300ms");
    let most = 0;
    let waitedForSlot = false;
    const sampler = setInterval(() => {
      void inProgress(x).then((n) => (most = Math.max(most, n))).catch(() => undefined);
      void x.runtime.db.query(`SELECT 1 FROM account_step WHERE waiting_for LIKE 'a free slot on mig1 (3/3 in progress)'`).then((r) => (waitedForSlot ||= (r.rowCount ?? 0) > 0)).catch(() => undefined);
    }, 50);
    try {
      await waitFor(async () => (await done(x)) === 8, 90_000, "all 8 accounts done");
    } finally {
      clearInterval(sampler);
    }
    expect(most).toBe(3);
    expect(waitedForSlot).toBe(true);
    // The log row follows the account's state change (same job, a moment later).
    await waitFor(async () => (await x.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_log WHERE message LIKE 'migrate: done on mig1%'`)).rows[0]!.n === 8, 10_000, "8 done log rows");
  }, 120_000);

  it("Redis loses everything mid-night (polled steps delayed, accounts waiting for slots): accounts-reconcile re-derives it from PostgreSQL and the night finishes", async () => {
    const x = await night("redis-loss", 6, { capacity: 6, concurrency: 2 }, "1s");
    await waitFor(async () => (await inProgress(x)) === 2 && (await x.runtime.db.query(`SELECT 1 FROM account_step WHERE phase = 'POLLING'`)).rowCount, 30_000, "polled steps and waiting accounts");
    // Every key of this fleet's prefix is gone (what a Redis restart without persistence does to it).
    // (Not followed by a count of the queue: a step running at that moment moves itself back to
    // delayed, and the recovery watch may already be re-deriving the flows.)
    expect(await cleanupPrefix(testRedisUrl(), x.runtime.prefix)).toBeGreaterThan(0);
    const job = await x.runtime.deps.jobs.enqueue("accounts-reconcile", {}, { jobId: "reconcile-after-loss" });
    const { job: reconciled } = await finishedJob(x.runtime, "maintenance", job.id!, 30_000);
    expect(reconciled.returnvalue).toMatchObject({ restored: [expect.any(Number)] });
    await waitFor(async () => (await done(x)) === 6, 90_000, "all 6 accounts done after the loss");
    // Each migration was started once: the re-derived jobs resumed polling instead of starting again.
    const { rows } = await x.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_log WHERE message LIKE 'migrate: started on%'`);
    expect(rows[0]!.n).toBe(6);
    await waitFor(async () => (await x.runtime.db.query(`SELECT 1 FROM migration_batch WHERE status = 'DONE'`)).rowCount, 30_000, "the batch to close");
  }, 150_000);
});
