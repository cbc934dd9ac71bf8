import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { createDashboardFixture, login, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

const HOSTILE_SERVER = `<img src=x onerror=alert(1)>`;

/** The accounts page over a known state: 5 accounts, 2 servers (one disabled), one running batch. */
describe("accounts page", () => {
  let fx: DashboardFixture;
  let db: DbPool;
  let base: string;

  beforeAll(async () => {
    fx = await createDashboardFixture("accounts");
    base = fx.dashboard.url;
    db = createPool({ connectionString: fx.db.url, max: 2 });
    await db.query(
      `INSERT INTO migration_server (name, host, role, capacity, enabled, credential_ref) VALUES
         ('mig1', 'mig1.lab', 'migration', 50, true, 'mig1'), ($1, 'x.lab', 'export', 10, false, 'x')`,
      [HOSTILE_SERVER],
    );
    await db.query(`INSERT INTO migration_batch (id, run_date, status, planned, done, failed) VALUES (1, '2026-11-30', 'RUNNING', 3, 1, 1)`);
    await db.query(
      `INSERT INTO migration_queue (external_id, email, name, consent_at, status, batch_id, steps_done) VALUES
         ('a', 'a@x.org', 'A', now(), 'DONE', 1, 2), ('b', 'b@x.org', 'B', now(), 'FAILED', 1, 1), ('c', 'c@x.org', 'C', now(), 'IN_PROGRESS', 1, 1),
         ('d', 'd@x.org', 'D', now(), 'QUEUED', NULL, 0), ('e', 'e@x.org', 'E', now(), 'QUEUED', NULL, 0)`,
    );
    await db.query(
      `INSERT INTO batch_assignment (batch_id, account_id, role, server, state)
       SELECT 1, id, 'migration', 'mig1', CASE status WHEN 'DONE' THEN 'DONE'::assignment_state WHEN 'FAILED' THEN 'FAILED' ELSE 'RUNNING' END
         FROM migration_queue WHERE batch_id = 1`,
    );
    await db.query(
      `INSERT INTO account_step (batch_id, account_id, step, name, server, phase, attempt, checks, output, last_error, category, cancel_state, cancel_output)
       SELECT 1, id, 0, 'export', 'mig1', CASE status WHEN 'FAILED' THEN 'FAILED' WHEN 'IN_PROGRESS' THEN 'POLLING' ELSE 'DONE' END, 1, 2,
              'stdout: exported <b>' || external_id || '</b>', CASE status WHEN 'FAILED' THEN 'mailbox not found' END, CASE status WHEN 'FAILED' THEN 'not-found' END,
              CASE status WHEN 'IN_PROGRESS' THEN 'DONE' END, CASE status WHEN 'IN_PROGRESS' THEN 'migration aborted' END
         FROM migration_queue WHERE batch_id = 1`,
    );
  });
  afterAll(async () => {
    await db?.end();
    await fx?.close();
  });

  it("needs a login", async () => {
    expect((await send(base, "/accounts")).status).toBe(401);
    expect((await send(base, "/accounts.json")).status).toBe(401);
  });

  it("JSON: accounts by status, servers, the batch with its assignments and step progress", async () => {
    const { jar } = await login(base, "victor", "victor-viewer-pw");
    const r = (await (await send(base, "/accounts.json", { jar })).json()) as Record<string, any>;
    expect(r.accounts).toMatchObject({ QUEUED: 2, DONE: 1, FAILED: 1, IN_PROGRESS: 1 });
    expect(r.servers.map((s: { name: string; enabled: boolean }) => [s.name, s.enabled])).toEqual(expect.arrayContaining([["mig1", true], [HOSTILE_SERVER, false]]));
    expect(r.batches).toHaveLength(1);
    expect(r.batches[0]).toMatchObject({ id: 1, status: "RUNNING", planned: 3, done: 1, failed: 1 });
    expect(r.batches[0].assignments).toEqual(
      expect.arrayContaining([
        { server: "mig1", role: "migration", state: "DONE", n: 1 },
        { server: "mig1", role: "migration", state: "FAILED", n: 1 },
        { server: "mig1", role: "migration", state: "RUNNING", n: 1 },
      ]),
    );
    expect(r.batches[0].stepsDone).toEqual(expect.arrayContaining([{ stepsDone: 1, n: 2 }, { stepsDone: 2, n: 1 }]));
  });

  it("HTML: the same numbers, every value escaped", async () => {
    const { jar } = await login(base, "victor", "victor-viewer-pw");
    const res = await send(base, "/accounts", { jar, headers: { accept: "text/html" } });
    expect(res.status).toBe(200);
    const body = await res.text();
    expect(body).toContain("Batch 1 · 2026-11-30 · RUNNING");
    expect(body).toContain("3 planned, 1 done, 1 failed, 0 cancelled");
    expect(body).not.toContain(HOSTILE_SERVER);
    expect(body).toContain("&lt;img src=x onerror=alert(1)&gt;");
    expect(body).toContain('href="/accounts"');
    expect(body).toContain('href="/accounts/batch/1"');
  });

  it("drill-down: batch → its accounts → one account's steps with output, error and cancel outcome (escaped)", async () => {
    const { jar } = await login(base, "victor", "victor-viewer-pw");
    expect((await send(base, "/accounts/batch/1")).status).toBe(401);
    const batchPage = await (await send(base, "/accounts/batch/1", { jar, headers: { accept: "text/html" } })).text();
    expect(batchPage).toContain("Batch 1 · 2026-11-30 · RUNNING");
    const { rows } = await db.query<{ id: number; external_id: string }>(`SELECT id, external_id FROM migration_queue WHERE batch_id = 1 ORDER BY id`);
    for (const r of rows) expect(batchPage).toContain(`href="/accounts/account/${r.id}"`);
    const failedOnly = (await (await send(base, "/accounts/json/batch/1?status=FAILED", { jar })).json()) as { accounts: Array<{ externalId: string; lastError: string | null }> };
    expect(failedOnly.accounts.map((a) => a.externalId)).toEqual(["b"]);
    const b = rows.find((r) => r.external_id === "b")!;
    const accountPage = await (await send(base, `/accounts/account/${b.id}`, { jar, headers: { accept: "text/html" } })).text();
    expect(accountPage).toContain("Account b");
    expect(accountPage).toContain("step 1 · export · FAILED on mig1");
    expect(accountPage).toContain("not-found: mailbox not found");
    expect(accountPage).toContain("stdout: exported &lt;b&gt;b&lt;/b&gt;");
    const c = rows.find((r) => r.external_id === "c")!;
    const detail = (await (await send(base, `/accounts/json/account/${c.id}`, { jar })).json()) as { steps: Array<{ phase: string; cancelState: string; cancelOutput: string }> };
    expect(detail.steps).toEqual([expect.objectContaining({ phase: "POLLING", cancelState: "DONE", cancelOutput: "migration aborted" })]);
    expect((await send(base, "/accounts/account/999999", { jar, headers: { accept: "text/html" } })).status).toBe(404);
    expect((await send(base, "/accounts/batch/abc", { jar, headers: { accept: "text/html" } })).status).toBe(404);
  });
});
