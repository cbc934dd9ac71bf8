import pg from "pg";
import { createDashboardFixture, login, send, PASSWORDS } from "./dashboardFixture";
import type { CookieJar, DashboardFixture } from "./dashboardFixture";
import type { RunningDashboard } from "../src/startDashboard";

/**
 * Shared progress readings (sharedRead.ts) across replicas. A reading is made slow (> 250 ms, so it is
 * reused for 3× its duration) by holding a lock on migration_ranges while it runs.
 */
describe("shared progress readings", () => {
  let fx: DashboardFixture;
  let b: RunningDashboard;
  let admin: pg.Client;
  let watcher: pg.Client;

  beforeAll(async () => {
    fx = await createDashboardFixture("shared-readings");
    b = await fx.replica();
    admin = new pg.Client({ connectionString: fx.db.url });
    await admin.connect();
    watcher = new pg.Client({ connectionString: fx.db.url });
    await watcher.connect();
    await admin.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'in/f' || g, 'f' || g, 10 FROM generate_series(1, 5) g`);
    await admin.query(
      `INSERT INTO migration_files (file_id, old_uri, file_name, size, status, error_category, error_message, retry_count)
       SELECT g, 'file:///in/f' || g, 'f' || g, 10, 'FAIL', 'network', 'boom', 1 FROM generate_series(1, 5) g`,
    );
  }, 60_000);
  afterAll(async () => {
    await admin?.end();
    await watcher?.end();
    await fx?.close();
  }, 60_000);

  type Progress = { at: string; numbers: { retryRequested: number } };
  const json = async (base: string, jar: CookieJar) => (await (await send(base, "/progress.json", { jar })).json()) as Progress;

  /**
   * One slow reading on each given dashboard: the lock is held until every reading is seen waiting
   * for it, then 600 ms more, so each takes > 600 ms however long its request took to reach its
   * query (a fixed 600 ms from the requests' start made a reading that started late a fast one).
   */
  async function slowReadings(bases: string[], jar: CookieJar): Promise<Progress[]> {
    await admin.query("BEGIN");
    let pending: Array<Promise<Progress>> = [];
    try {
      await admin.query("LOCK TABLE migration_ranges IN ACCESS EXCLUSIVE MODE");
      pending = bases.map((base) => json(base, jar));
      await readingsBlocked(bases.length, pending);
      await new Promise((r) => setTimeout(r, 600));
    } finally {
      await admin.query("COMMIT");
    }
    return Promise.all(pending);
  }

  /**
   * Until `count` readings wait for the lock: as many dashboard sessions of this database waiting
   * for a lock with the same statement (each reading runs each of its statements once). Asked
   * outside the admin's transaction, which would see one snapshot of pg_stat_activity.
   */
  async function readingsBlocked(count: number, pending: Array<Promise<Progress>>): Promise<void> {
    let answered = false;
    for (const p of pending) p.then(() => (answered = true), () => (answered = true));
    const deadline = Date.now() + 20_000;
    for (;;) {
      const { rows } = await watcher.query<{ n: number }>(
        `SELECT coalesce(max(n), 0)::int AS n
           FROM (SELECT count(*) AS n FROM pg_stat_activity
                  WHERE datname = current_database() AND application_name = 'fleet-dashboard' AND wait_event_type = 'Lock'
                  GROUP BY query) waiting`,
      );
      if (rows[0]!.n >= count) return;
      if (answered) throw new Error("a progress request was answered while migration_ranges was locked: it did not read");
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} progress reading(s) to wait for the lock (seen: ${rows[0]!.n})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async function retryFile(base: string, jar: CookieJar, file: string): Promise<void> {
    const csrf = /name="_csrf" value="([^"]+)"/.exec(await (await send(base, "/failures?category=network", { jar })).text())![1]!;
    const posted = await send(base, "/failures/retry", {
      jar,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ _csrf: csrf, back: "/failures", file }).toString(),
    });
    expect(posted.status).toBe(303);
  }

  it("a retry posted on one replica shows at once on the other (deploy/k8s runs 2, no stickiness)", async () => {
    // One session works on both replicas (sessions live in Redis).
    const alice = (await login(fx.dashboard.url, "alice", PASSWORDS.alice)).jar;
    const [onA, onB] = await slowReadings([fx.dashboard.url, b.url], alice);
    expect(onA!.numbers.retryRequested).toBe(0);
    expect(onB!.numbers.retryRequested).toBe(0);
    await retryFile(fx.dashboard.url, alice, "1");
    expect((await json(fx.dashboard.url, alice)).numbers.retryRequested).toBe(1); // replica A: invalidated
    expect((await json(b.url, alice)).numbers.retryRequested).toBe(1); // replica B: told through Redis
  }, 60_000);

  it("a request that changes nothing (an unauthenticated POST) does not throw the reading away", async () => {
    const victor = (await login(fx.dashboard.url, "victor", PASSWORDS.victor)).jar;
    await new Promise((r) => setTimeout(r, 3_000)); // past any earlier reuse window
    const [first] = await slowReadings([fx.dashboard.url], victor);
    expect((await json(fx.dashboard.url, victor)).at).toBe(first!.at); // reused
    const stranger = await send(fx.dashboard.url, "/no-such-route", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(stranger.status).toBeGreaterThanOrEqual(400);
    expect((await json(fx.dashboard.url, victor)).at).toBe(first!.at);
  }, 60_000);
});
