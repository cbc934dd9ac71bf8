import { execFile } from "node:child_process";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { accountDetail, listAccounts } from "@fleet/db/sql/accountViews";
import { startSmtpServer } from "@fleet/testing/smtpServer";
import type { SmtpTestServer } from "@fleet/testing/smtpServer";
import { cancelAccountMigrations } from "../src/accounts/cancelAccounts";
import { localDate } from "../src/accounts/runDate";
import { createPipelineHarness, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { startConsentApi } from "./consentApiFixture";
import type { ConsentFixture } from "./consentApiFixture";
import { accountStates } from "./accountsFixture";
import { startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";

/**
 * A whole night left alone, on real servers on loopback (sshd running the site's tools, the
 * consent API on node:http, smtp-server, Postgres, Redis) and ONE job runner that is never
 * restarted: SMTP is down when the run starts and the host key of one migration machine has
 * changed. Nothing is burned: the accounts wait for their email, the affected accounts are held
 * (0 failures), and once known_hosts is fixed the same worker finishes them. Along the way an
 * account is cancelled mid-migration (its cancel command runs on the server) and one whose
 * email bounces is postponed, counted and told.
 */

const exec = promisify(execFile);
const TZ = "Europe/Berlin";
const TONIGHT = localDate(new Date(), TZ);

let site: AccountSite;
let smtp: SmtpTestServer;
let api: ConsentFixture;
let h: PipelineHarness;
let box2KnownHosts: string;
let wrongKnownHosts: string;
let notifyRound: NodeJS.Timeout;

const consent = (id: string) => ({ id, email: `${id}@example.org`, name: `User ${id}`, consentedAt: "2026-11-29T09:00:00Z" });
const calls = async () => (await readFile(join(site.state, "calls"), "utf8")).split("\n").filter(Boolean);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  site = await startAccountSite();
  smtp = await startSmtpServer();
  // Balanced by capacity, in consent order: mig1 gets ok1, ok3, hang-mig-c1; mig2 gets ok2, ok4, pp1.
  api = await startConsentApi([["ok1", "ok2", "ok3", "ok4", "hang-mig-c1", "pp1"].map(consent)]);
  // A second SSH entry for the same sshd with its own known_hosts: "mig2's machine".
  box2KnownHosts = join(site.dir, "known_hosts_box2");
  await writeFile(box2KnownHosts, `${site.ssh.knownHostsLine}\n`);
  await exec("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", join(site.dir, "other_host_key")]);
  const otherKey = (await readFile(join(site.dir, "other_host_key.pub"), "utf8")).trim().split(/\s+/).slice(0, 2).join(" ");
  wrongKnownHosts = `${site.ssh.knownHostsLine.split(" ")[0]} ${otherKey}\n`;
  const servers = await readFile(site.env.SSH_SERVERS_FILE!, "utf8");
  const box2 = servers.replace(/^ {2}box:/m, "  box2:").replace(join(site.dir, "known_hosts"), box2KnownHosts).replace(/^servers:\n/, "");
  await writeFile(join(site.dir, "servers-night.yaml"), `${servers}${box2}`);
  await writeFile(
    join(site.dir, "workflow-night.yaml"),
    `servers:
  exp1: { ssh: box, role: export, capacity: 20 }
  mig1: { ssh: box, role: migration, capacity: 3 }
  mig2: { ssh: box2, role: migration, capacity: 3 }
  sync1: { ssh: box, role: sync, capacity: 20 }
checks:
  migration: fx-health
steps:
  - name: export
    role: export
    command: fx-export {externalId} {name}
    timeout: 30s
  - name: migrate
    role: migration
    command: fx-mig-start {externalId}
    check: { command: "fx-mig-status {externalId}", every: 300ms, done: "^COMPLETED", failed: "^FAILED", timeout: 10m }
    cancel: fx-mig-cancel {externalId}
  - name: directory-sync
    role: sync
    command: fx-sync {externalId}
    timeout: 30s
groupUpdate:
  role: sync
  group: migrating-tonight
  command: fx-group {group} {email}
  removeCommand: fx-group-remove {group} {email}
`,
  );
  h = await createPipelineHarness("account-night", {
    SSH_SERVERS_FILE: join(site.dir, "servers-night.yaml"),
    ACCOUNTS_WORKFLOW_FILE: join(site.dir, "workflow-night.yaml"),
    ACCOUNTS_CONSENT_URL: api.url,
    ACCOUNTS_RECHECK: "1s",
    ACCOUNTS_PROBE_TIMEOUT: "10s",
    SMTP_HOST: smtp.host,
    SMTP_PORT: String(smtp.port),
    NOTIFY_OPERATORS: "ops@example.org",
    NOTIFY_BACKOFF: "200ms",
    FLEET_TZ: TZ,
  });
  await h.startRunner({ concurrency: 2 });
  // The scheduler's every-minute notify-send round, every 2 s here (a round already running
  // swallows the enqueue of a message decided meanwhile: the next round sends it).
  notifyRound = setInterval(() => void h.runtime.deps.jobs.enqueue("notify-send", {}).catch(() => undefined), 2_000);
}, 60_000);

afterAll(async () => {
  clearInterval(notifyRound);
  await h?.close();
  await api?.close();
  await smtp?.stop();
  await site?.ssh.stop();
  if (site) await rm(site.dir, { recursive: true, force: true });
});

async function run(name: "accounts-sync" | "accounts-prepare" | "accounts-group-update" | "accounts-run") {
  const job = await h.runtime.deps.jobs.enqueue(name, { runDate: TONIGHT }, { jobId: `${name}-${Math.random().toString(36).slice(2)}` });
  const { state, job: done } = await finishedJob(h.runtime, "maintenance", job.id!, 90_000);
  if (state !== "completed") throw new Error(`${name} ${state}: ${done.failedReason}`);
  return done.returnvalue as Record<string, unknown>;
}
const batch = async () => (await h.runtime.db.query(`SELECT id, status, planned, done, failed, cancelled, postponed FROM migration_batch WHERE run_date = $1`, [TONIGHT])).rows[0];
const states = () => accountStates(h.runtime);
const mailsTo = (who: RegExp, subject: RegExp) => smtp.messages.filter((m) => who.test(m.to[0] ?? "") && subject.test(m.header("subject") ?? ""));

describe("a night left alone", () => {
  it("SMTP down and a changed host key hold accounts (0 failures); the same worker finishes them once fixed; cancel and postpone are told", async () => {
    // pp1's mailbox bounces its first message (the pre-migration email).
    smtp.reject.push({ recipient: /^pp1@/, code: 550, times: 1 });
    expect(await run("accounts-sync")).toMatchObject({ inserted: 6, rejected: 0 });
    await smtp.stop(); // SMTP down from 13:30 on
    expect(await run("accounts-prepare")).toMatchObject({ created: true, accounts: 6, emails: 6 });
    // mig2's machine got a new host key: known_hosts no longer matches (the running worker re-reads it).
    await writeFile(box2KnownHosts, wrongKnownHosts);
    // A running worker looks at its configuration files at most once a second (configFiles.ts);
    // the pre-flight must not come before that look.
    await sleep(1_100);
    expect(await run("accounts-group-update")).toMatchObject({ added: 6, held: 0, failed: 0 });
    const started = await run("accounts-run");
    expect(started).toMatchObject({ started: true, accounts: 6, held: 3 });
    expect(Object.keys(started.down as object)).toEqual(["mig2"]);

    // No email delivered, so no step starts: every account waits for its notice, without a worker.
    await sleep(4_000);
    expect((await calls()).filter((l) => l.startsWith("export"))).toEqual([]);
    const waiting = await listAccounts(h.runtime.db, { batchId: (await batch())!.id as number });
    expect(waiting.map((a) => a.status)).toEqual(["HELD", "HELD", "HELD", "HELD", "HELD", "HELD"]);
    expect(waiting.every((a) => a.stepPhase === "WAITING" && /pre-migration email/.test(a.waitingFor ?? ""))).toBe(true);
    const { rows: alerts } = await h.runtime.db.query<{ message: string }>(`SELECT message FROM migration_log WHERE message LIKE 'alert:%' ORDER BY id`);
    expect(alerts.map((a) => a.message)).toEqual(expect.arrayContaining([expect.stringMatching(/^alert: migration server mig2 is down \(auth-failed\)/), expect.stringMatching(/^alert: pre-flight of batch \d+: mig2 down; 3 accounts held/)]));

    // SMTP is back (the every-minute notify-send round): emails go out, then the steps start.
    await smtp.start();
    await waitFor(async () => {
      const s = await states();
      return s.ok1 === "DONE" && s.ok3 === "DONE" && s.pp1 === "POSTPONED" && s.ok2 === "HELD" && s.ok4 === "HELD" && s;
    }, 90_000, "mig1's accounts done, mig2's held, pp1 postponed");
    const log = await calls();
    // Each account's first command came after its email was delivered.
    for (const id of ["ok1", "ok2", "ok3", "ok4"]) expect(mailsTo(new RegExp(`^${id}@`), /tonight/)).toHaveLength(1);
    expect(log.filter((l) => l.startsWith("export")).sort()).toEqual(["export [hang-mig-c1] [User hang-mig-c1]", "export [ok1] [User ok1]", "export [ok2] [User ok2]", "export [ok3] [User ok3]", "export [ok4] [User ok4]"]);
    // Held, not burned: nothing failed, nothing ran on mig2, and they wait at their migrate step.
    expect(log.filter((l) => /mig-start \[(ok2|ok4)\]/.test(l))).toEqual([]);
    const { rows: held } = await h.runtime.db.query(`SELECT external_id, steps_done, last_error FROM migration_queue WHERE status = 'HELD' ORDER BY external_id`);
    expect(held).toEqual([
      { external_id: "ok2", steps_done: 1, last_error: expect.stringMatching(/server mig2 is down: .*host key/i) },
      { external_id: "ok4", steps_done: 1, last_error: expect.stringMatching(/server mig2 is down: .*host key/i) },
    ]);
    expect(Object.values(await states())).not.toContain("FAILED");
    const { rows: mig2 } = await h.runtime.db.query(`SELECT health, last_category FROM migration_server WHERE name = 'mig2'`);
    expect(mig2).toEqual([{ health: "down", last_category: "auth-failed" }]);

    // The postponed account: counted, told (its first email bounced), planned again later.
    await waitFor(async () => mailsTo(/^pp1@/, /postponed/).length === 1, 30_000, "pp1's postponed email");
    expect(mailsTo(/^pp1@/, /postponed/)[0]!.raw.replace(/=\r?\n/g, "")).toMatch(/could not be delivered/);

    // Cancel hang-mig-c1 during its polled migration: the cancel command and the group removal run on the server.
    const { rows: hang } = await h.runtime.db.query<{ id: number }>(`SELECT id FROM migration_queue WHERE external_id = 'hang-mig-c1'`);
    await waitFor(async () => (await h.runtime.db.query(`SELECT 1 FROM account_step WHERE account_id = $1 AND step = 1 AND phase = 'POLLING'`, [hang[0]!.id])).rowCount, 30_000, "the migration to be polled");
    const services = h.runtime.deps.accounts;
    const cancelled = await cancelAccountMigrations({ db: h.runtime.db, redis: h.runtime.redis, prefix: h.runtime.prefix, jobs: h.runtime.deps.jobs, workflow: services.workflow, target: { accountId: hang[0]!.id }, reason: "user asked to stay" });
    expect(cancelled).toMatchObject({ cancelled: 1, cleanups: 1 });
    await waitFor(async () => (await calls()).includes("group-remove [migrating-tonight] [hang-mig-c1@example.org]"), 30_000, "the group removal");
    expect(await calls()).toContain("mig-cancel [hang-mig-c1]");
    const { rows: cancelRow } = await h.runtime.db.query(`SELECT phase, cancel_state, cancel_output FROM account_step WHERE account_id = $1 AND step = 1`, [hang[0]!.id]);
    expect(cancelRow).toEqual([{ phase: "CANCELLED", cancel_state: "DONE", cancel_output: expect.stringContaining("migration of hang-mig-c1 aborted") }]);
    await waitFor(async () => mailsTo(/^hang-mig-c1@/, /cancelled/).length === 1, 30_000, "the cancelled email");
    const { rows: cancelLog } = await h.runtime.db.query(`SELECT message FROM migration_log WHERE subject = 'account:hang-mig-c1' AND message LIKE 'cancelled:%'`);
    expect(cancelLog).toEqual([{ message: "cancelled: user asked to stay" }]);

    // known_hosts fixed: the SAME runner's held steps see the server back and finish.
    await writeFile(box2KnownHosts, `${site.ssh.knownHostsLine}\n`);
    await waitFor(async () => (await batch())?.status === "DONE", 90_000, "the batch to finish");
    expect(await states()).toEqual({ ok1: "DONE", ok2: "DONE", ok3: "DONE", ok4: "DONE", "hang-mig-c1": "CANCELLED", pp1: "POSTPONED" });
    expect(await batch()).toMatchObject({ planned: 6, done: 4, failed: 0, cancelled: 1, postponed: 1 });
    expect((await h.runtime.db.query(`SELECT health FROM migration_server WHERE name = 'mig2'`)).rows).toEqual([{ health: "healthy" }]);
    await waitFor(async () => mailsTo(/^ops@/, /Account migration/).length === 1, 30_000, "the operators' summary");
    expect(mailsTo(/^ops@/, /Account migration/)[0]!.header("subject")).toBe(`Account migration ${TONIGHT}: 4 done, 0 failed, 1 cancelled, 1 postponed`);

    // Every account's steps are visible without SQL (fleet accounts show / the dashboard use this).
    const ok2 = (await accountDetail(h.runtime.db, "ok2"))!;
    expect(ok2.steps.map((s) => [s.name, s.phase, s.server])).toEqual([
      ["export", "DONE", "exp1"],
      ["migrate", "DONE", "mig2"],
      ["directory-sync", "DONE", "sync1"],
    ]);
    expect(ok2.steps[1]!.output).toContain("COMPLETED");
    expect(ok2.emails.map((e) => [e.template, e.status])).toEqual([["pre-migration", "SENT"]]);
    expect(ok2.log.map((l) => l.message)).toEqual(expect.arrayContaining([expect.stringMatching(/^held: server mig2 is down/), "migrate: done on mig2"]));
  }, 300_000);
});
