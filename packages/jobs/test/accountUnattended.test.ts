import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { createServer } from "node:http";
import type { Server } from "node:http";
import { BlockList } from "node:net";
import type { AddressInfo } from "node:net";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "@fleet/core/logger";
import { startSmtpServer } from "@fleet/testing/smtpServer";
import type { SmtpTestServer } from "@fleet/testing/smtpServer";
import { fetchConsentPage } from "../src/accounts/consentApi";
import { recordDailyRunOf } from "../src/accounts/dailyPayload";
import { noticeDueAt } from "../src/accounts/prepareBatch";
import { localDate } from "../src/accounts/runDate";
import { syncConsents } from "../src/accounts/syncConsents";
import { loadWorkflowFile } from "../src/accounts/workflowFile";
import { ConfigFiles } from "../src/runtime/configFiles";
import { createPipelineHarness, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { startConsentApi } from "./consentApiFixture";
import { accountStates, insertAccounts } from "./accountsFixture";
import { startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";

/** The smaller items of an unattended night (issue 14, item 7), each on real files and servers. */

const exec = promisify(execFile);

let site: AccountSite;
let smtp: SmtpTestServer;
let h: PipelineHarness | undefined;
const silent = createLogger({ name: "test", LOG_LEVEL: "silent", LOG_FORMAT: "json" });

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

const harness = (label: string, env: Record<string, string> = {}) =>
  createPipelineHarness(label, { ...site.env, SMTP_HOST: smtp.host, SMTP_PORT: String(smtp.port), NOTIFY_BACKOFF: "200ms", FLEET_TZ: "Europe/Berlin", ...env });

async function runJob(x: PipelineHarness, name: "accounts-sync" | "accounts-prepare" | "accounts-run" | "accounts-group-update", runDate: string) {
  const job = await x.runtime.deps.jobs.enqueue(name, { runDate }, { jobId: `${name}-${Math.random().toString(36).slice(2)}` });
  const { state, job: done } = await finishedJob(x.runtime, "maintenance", job.id!, 60_000);
  if (state !== "completed") throw new Error(`${name} ${state}: ${done.failedReason}`);
  return done.returnvalue as Record<string, unknown>;
}

describe("configuration that follows its files", () => {
  it("a YAML syntax error names its line", async () => {
    const dir = await mkdtemp(join(tmpdir(), "fleet-wf-"));
    try {
      await writeFile(join(dir, "w.yaml"), "servers:\n  mig1: { ssh: box\nsteps: []\n");
      expect(() => loadWorkflowFile(join(dir, "w.yaml"))).toThrow(/is not valid YAML: .*line \d+/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a changed workflow is applied; a bad edit keeps the last good one and says so once", async () => {
    const file = join(site.dir, "workflow-reload.yaml");
    const good = await readFile(site.env.ACCOUNTS_WORKFLOW_FILE!, "utf8");
    await writeFile(file, good);
    const rejected: string[] = [];
    const files = new ConfigFiles({ serversFile: site.env.SSH_SERVERS_FILE!, workflowFile: file, log: silent, checkEveryMs: 0, onRejected: (m) => rejected.push(m) });
    expect(files.current().workflow!.steps.map((s) => s.name)).toEqual(["export", "migrate", "directory-sync"]);
    await writeFile(file, good.replace("name: directory-sync", "name: dir-sync"));
    expect(files.current().workflow!.steps.map((s) => s.name)).toEqual(["export", "migrate", "dir-sync"]);
    await writeFile(file, good.replace("role: sync\n    command: fx-sync", "role: nowhere\n    command: fx-sync"));
    expect(files.current().workflow!.steps.map((s) => s.name)).toEqual(["export", "migrate", "dir-sync"]);
    expect(files.current().workflow!.steps.map((s) => s.name)).toEqual(["export", "migrate", "dir-sync"]);
    expect(rejected).toEqual([expect.stringMatching(/last good configuration stays in force: [\s\S]*steps\.2\.role: no server has role "nowhere"/)]);
    // known_hosts is one of the watched files: an unreadable one is refused the same way.
    const knownHosts = join(site.dir, "known_hosts");
    const line = await readFile(knownHosts, "utf8");
    await writeFile(knownHosts, "not a known_hosts line\n");
    files.current();
    expect(rejected).toHaveLength(2);
    await writeFile(knownHosts, line);
    await writeFile(file, good);
    expect(files.current().workflow!.steps.map((s) => s.name)).toEqual(["export", "migrate", "directory-sync"]);
  });

  it("an edit that keeps the file's size and mtime is still seen (a host key replaced within one clock tick)", async () => {
    const file = join(site.dir, "workflow-same-size.yaml");
    const good = await readFile(site.env.ACCOUNTS_WORKFLOW_FILE!, "utf8");
    // One instant, to the nanosecond, for both versions (as two writes within one tick get).
    const tick = ["-m", "-d", "@1796000000.123456789", file];
    await writeFile(file, good);
    await exec("touch", tick);
    const files = new ConfigFiles({ serversFile: site.env.SSH_SERVERS_FILE!, workflowFile: file, log: silent, checkEveryMs: 0 });
    expect(files.current().workflow!.steps.map((s) => s.name)).toEqual(["export", "migrate", "directory-sync"]);
    const before = await stat(file);
    await writeFile(file, good.replace("name: directory-sync", "name: directory-synk"));
    await exec("touch", tick);
    const after = await stat(file);
    expect([after.ino, after.size, after.mtimeMs]).toEqual([before.ino, before.size, before.mtimeMs]);
    expect(files.current().workflow!.steps.map((s) => s.name)).toEqual(["export", "migrate", "directory-synk"]);
  });
});

describe("consent API contract", () => {
  let server: Server;
  let url: string;
  let requests = 0;
  let body = "";
  beforeAll(async () => {
    server = createServer((_req, res) => {
      requests++;
      res.writeHead(200, { "content-type": body.startsWith("<") ? "text/html" : "application/json" });
      res.end(body);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/consents`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it.each([
    ["<html>proxy login</html>", /the body is not JSON \(content-type text\/html; .*starts with "<html>proxy login<\/html>"\)/],
    ['{"data": []}', /"items" is missing/],
    ['{"items": [], "nextCursor": 7}', /"nextCursor" is a number, not a string or null/],
    ["[]", /the body is an array, not an object/],
  ])("a 200 with %s fails at once (permanent, not retried) saying what is wrong", async (answer, message) => {
    body = answer;
    requests = 0;
    const consent = { url, authHeader: "Authorization", token: "", pageSize: 10, timeoutMs: 5_000, backoffMs: [10, 10, 10], maxPageBytes: 1024 * 1024, privateNetworks: new BlockList() };
    await expect(fetchConsentPage(consent, null, { signal: new AbortController().signal })).rejects.toMatchObject({ category: "invalid-payload", retryable: false, message });
    expect(requests).toBe(1);
  });

  // Found by probing: an API that ignores `limit` (or a proxy that never ends its body) was read
  // whole into memory: a 700 MB answer took a worker to 1.5 GB (its container has 1 GiB: killed,
  // the job handed to the next worker, which dies too), and past V8's longest string the error
  // was retried as "consent API still failing (Error)". Now the read stops at
  // ACCOUNTS_CONSENT_MAX_PAGE_BYTES and the sync fails at once, saying why.
  it.each([
    ["without a length (an endless body)", false],
    ["with a Content-Length over the bound", true],
  ])("a 200 whose body is larger than ACCOUNTS_CONSENT_MAX_PAGE_BYTES fails at once %s, without reading it all", async (_what, withLength) => {
    const chunk = Buffer.from(`${JSON.stringify({ id: "x", email: "x@example.org", name: "X", consentedAt: "2026-11-29T09:00:00Z" })},`.repeat(1_000));
    let sentBytes = 0;
    const endless = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json", ...(withLength ? { "content-length": String(64 * 1024 * 1024) } : {}) });
      res.write('{"items":[');
      const pump = () => {
        while (!res.destroyed && sentBytes < 64 * 1024 * 1024) {
          sentBytes += chunk.length;
          if (!res.write(chunk)) return void res.once("drain", pump);
        }
        res.end();
      };
      res.on("close", () => res.destroy());
      pump();
    });
    await new Promise<void>((r) => endless.listen(0, "127.0.0.1", r));
    try {
      const consent = { url: `http://127.0.0.1:${(endless.address() as AddressInfo).port}/c`, authHeader: "Authorization", token: "", pageSize: 10, timeoutMs: 30_000, backoffMs: [10, 10], maxPageBytes: 1024 * 1024, privateNetworks: new BlockList() };
      await expect(fetchConsentPage(consent, null, { signal: new AbortController().signal })).rejects.toMatchObject({
        category: "invalid-payload",
        retryable: false,
        message: expect.stringMatching(/consent API answered a page larger than 1048576 bytes \(ACCOUNTS_CONSENT_MAX_PAGE_BYTES; limit=10 asked\)/),
      });
      // Stopped near the bound, not at the end of the 64 MiB.
      expect(sentBytes).toBeLessThan(32 * 1024 * 1024);
    } finally {
      endless.closeAllConnections();
      await new Promise<void>((r) => endless.close(() => r()));
    }
  }, 60_000);
});

describe("notices and daily markers", () => {
  it("a night planned in advance gets its emails on its own date (ACCOUNTS_NOTICE_AT); tonight's go at once", () => {
    const settings = { timeZone: "Europe/Berlin", noticeAt: "09:00" };
    const now = new Date("2026-12-04T10:00:00Z");
    expect(noticeDueAt("2026-12-04", settings, now)).toBeNull();
    expect(noticeDueAt("2026-12-10", settings, now)?.toISOString()).toBe("2026-12-10T08:00:00.000Z");
    expect(noticeDueAt("2026-07-10", settings, new Date("2026-07-01T10:00:00Z"))?.toISOString()).toBe("2026-07-10T07:00:00.000Z");
  });

  it("plan --date for a future night: emails wait for that day, {server} and {group} are filled, and today's daily markers do not move", async () => {
    h = await harness("account-future");
    await insertAccounts(h.runtime, [{ externalId: "f1" }]);
    await h.startRunner({ concurrency: 2 });
    const future = "2099-01-15";
    expect(await runJob(h, "accounts-prepare", future)).toMatchObject({ created: true, emails: 1 });
    expect(await runJob(h, "accounts-group-update", future)).toMatchObject({ added: 1 });
    const { rows } = await h.runtime.db.query<{ status: string; next_attempt_at: Date; data: Record<string, string> }>(`SELECT status, next_attempt_at, data FROM notification`);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.status).toBe("PENDING");
    expect(rows[0]!.next_attempt_at.toISOString()).toBe("2099-01-15T08:00:00.000Z");
    expect(rows[0]!.data).toMatchObject({ server: "exp1", group: "migrating-tonight", server_migration: expect.stringMatching(/^mig[12]$/) });
    const { rows: markers } = await h.runtime.db.query(`SELECT key FROM sync_state WHERE key LIKE 'daily:%'`);
    expect(markers).toEqual([]);
    expect(await recordDailyRunOf(h.runtime.db, "accounts-sync", localDate(new Date(), "Europe/Berlin"), "Europe/Berlin")).toBe(true);
    expect((await h.runtime.db.query(`SELECT key FROM sync_state WHERE key LIKE 'daily:%'`)).rows).toEqual([{ key: "daily:accounts-sync" }]);
  }, 90_000);
});

describe("revocations", () => {
  it("a consent revoked before the run takes the account out of its batch with a notice; one revoked during its run finishes (setting finish)", async () => {
    const api = await startConsentApi([[
      { id: "r1", email: "r1@example.org", name: "R1", consentedAt: "2026-11-29T09:00:00Z" },
      { id: "r2", email: "r2@example.org", name: "R2", consentedAt: "2026-11-29T09:00:00Z" },
      { id: "r3", email: "r3@example.org", name: "R3", consentedAt: "2026-11-29T09:00:00Z" },
    ]]);
    try {
      h = await harness("account-revoke", { ACCOUNTS_CONSENT_URL: api.url });
      await h.startRunner({ concurrency: 2 });
      expect(await runJob(h, "accounts-sync", "2026-11-30")).toMatchObject({ inserted: 3 });
      expect(await runJob(h, "accounts-prepare", "2026-11-30")).toMatchObject({ accounts: 3 });
      await h.runtime.db.query(`UPDATE migration_queue SET status = 'IN_PROGRESS' WHERE external_id = 'r3'`);
      // The API marks r2 and r3 revoked (same ids, revokedAt set) on the page the cursor is at.
      api.pages[0] = api.pages[0]!.map((r) => ((r as { id: string }).id === "r1" ? r : { ...(r as object), revokedAt: "2026-11-30T08:00:00Z" }));
      const sync = await syncConsents({ db: h.runtime.db, consent: h.runtime.deps.accounts.settings.consent, log: silent, signal: new AbortController().signal, job: "test", revokeDuringRun: "finish" });
      expect(sync).toMatchObject({ revoked: 1, stopRunning: [] });
      const states = await accountStates(h.runtime);
      expect(states).toEqual({ r1: expect.stringMatching(/^(SCHEDULED|NOTIFIED)$/), r2: "REVOKED", r3: "IN_PROGRESS" });
      const { rows } = await h.runtime.db.query(`SELECT subject, message FROM migration_log WHERE message LIKE 'consent revoked%' ORDER BY subject`);
      expect(rows).toEqual([
        { subject: "account:r2", message: expect.stringMatching(/^consent revoked: taken out of the batch \d+/) },
        { subject: "account:r3", message: "consent revoked during its run: letting it finish (ACCOUNTS_REVOKE_DURING_RUN=finish)" },
      ]);
      await h.runtime.deps.jobs.enqueue("notify-send", {});
      await waitFor(async () => smtp.messages.some((m) => m.to[0] === "r2@example.org" && /cancelled/.test(m.header("subject") ?? "")), 30_000, "r2's cancelled email");
      const { rows: batch } = await h.runtime.db.query(`SELECT id FROM migration_batch`);
      const { rows: counts } = await h.runtime.db.query(`SELECT status::text, count(*)::int AS n FROM migration_queue WHERE batch_id = $1 GROUP BY 1 ORDER BY 1`, [batch[0]!.id]);
      expect(counts).toEqual(expect.arrayContaining([{ status: "IN_PROGRESS", n: 1 }, { status: "REVOKED", n: 1 }]));
      expect(counts).toHaveLength(3);
    } finally {
      await api.close();
    }
  }, 90_000);
});

describe("maintenance queue", () => {
  it("a consent sync stuck on a slow API does not hold the notification sender back (maintenance concurrency 2)", async () => {
    let release: () => void = () => undefined;
    const stuck = createServer((_req, res) => {
      release = () => {
        if (res.headersSent) return;
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ items: [], nextCursor: null }));
      };
    });
    await new Promise<void>((r) => stuck.listen(0, "127.0.0.1", r));
    try {
      h = await harness("account-slow-sync", { ACCOUNTS_CONSENT_URL: `http://127.0.0.1:${(stuck.address() as AddressInfo).port}/c`, ACCOUNTS_CONSENT_TIMEOUT: "60s" });
      await h.startRunner({ concurrency: 2 });
      const sync = await h.runtime.deps.jobs.enqueue("accounts-sync", { runDate: "2026-11-30" }, { jobId: "slow-sync" });
      await waitFor(async () => (await h!.runtime.deps.jobs.queue("maintenance").getJobState(sync.id!)) === "active", 10_000, "the sync to be running");
      await h.runtime.db.query(`INSERT INTO notification (dedupe_key, recipient, template, data) VALUES ('x:1', 'slow@example.org', 'operator-alert', '{"summary": "hello", "details": ""}')`);
      await h.runtime.deps.jobs.enqueue("notify-send", {});
      await waitFor(async () => smtp.messages.some((m) => m.to[0] === "slow@example.org"), 20_000, "the email sent while the sync waits");
      expect(await h.runtime.deps.jobs.queue("maintenance").getJobState(sync.id!)).toBe("active");
      release();
      await finishedJob(h.runtime, "maintenance", sync.id!, 20_000);
    } finally {
      release();
      await new Promise<void>((r) => stuck.close(() => r()));
    }
  }, 60_000);
});

describe("CLI-free run planned by the run itself", () => {
  it("a run that plans its own batch (13:30 missed) queues the emails and waits for them before step 1", async () => {
    // A step held for its pre-migration email looks again after 1 s, not 30.
    h = await harness("account-run-plans", { ACCOUNTS_RECHECK: "1s" });
    await insertAccounts(h.runtime, [{ externalId: "late1" }]);
    await h.startRunner({ concurrency: 2 });
    expect(await runJob(h, "accounts-run", "2026-11-30")).toMatchObject({ started: true, accounts: 1 });
    await h.runtime.deps.jobs.enqueue("notify-send", {});
    await waitFor(async () => (await accountStates(h!.runtime)).late1 === "DONE", 60_000, "the account to be migrated");
    const { rows } = await h.runtime.db.query<{ sent_at: Date }>(`SELECT sent_at FROM notification WHERE template = 'pre-migration'`);
    const { rows: started } = await h.runtime.db.query<{ started_at: Date }>(`SELECT started_at FROM account_step WHERE step = 0`);
    expect(rows[0]!.sent_at.getTime()).toBeLessThanOrEqual(started[0]!.started_at.getTime());
  }, 90_000);
});
