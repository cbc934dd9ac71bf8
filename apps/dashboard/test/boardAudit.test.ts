import { UnrecoverableError, Worker } from "bullmq";
import { Redis } from "ioredis";
import { createPool } from "@fleet/db/pool";
import { replayLostRequests } from "@fleet/jobs/maintenance/replayRequests";
import { createLogger } from "@fleet/core/logger";
import { PASSWORDS, createDashboardFixture, login, send } from "./dashboardFixture";
import type { CookieJar, DashboardFixture } from "./dashboardFixture";

/**
 * The board's writes are recorded in PostgreSQL with who made them (they were in the request log
 * only): a job's retry, promote or clean in its operation's history, a queue's pause, resume,
 * promote, retry or clean by status in migration_log. Refused and failed writes are not recorded
 * as done.
 */
describe("board writes recorded with the operator", () => {
  let fx: DashboardFixture;
  let base: string;
  let jar: CookieJar;

  const write = (method: string, path: string, as = jar) => send(base, path, { method, jar: as, headers: { "x-xsrf-token": as.get("XSRF-TOKEN") ?? "", origin: base } });
  const boardRows = async () =>
    (await fx.dashboard.db.query<{ level: string; job: string; subject: string; message: string; details: Record<string, unknown> }>(`SELECT level, job, subject, message, details FROM migration_log WHERE job = 'board' ORDER BY id`)).rows;
  const statusRows = async (id: string) => (await fx.dashboard.db.query<{ kind: string; message: string | null }>(`SELECT kind, message FROM operation_status WHERE operation_id = $1 ORDER BY id`, [id])).rows;
  /** Submitted through the API (so the history has it, as for any operator's submission), then failed for good. */
  const failedOperation = async (rangeId: number) => {
    const res = await send(base, "/api/operations", { method: "POST", headers: { authorization: `Bearer ${fx.apiToken}`, "content-type": "application/json" }, body: JSON.stringify({ name: "migrate-range", data: { rangeId } }) });
    expect(res.status).toBe(202);
    const connection = new Redis(fx.config.REDIS_URL, { maxRetriesPerRequest: null });
    const worker = new Worker("migration", null, { connection, prefix: `{${fx.prefix}}`, autorun: false });
    try {
      const job = (await worker.getNextJob("test-token"))!;
      await job.moveToFailed(new UnrecoverableError("io: disk gone"), "test-token", false);
      expect(await job.getState()).toBe("failed");
      return job.id!;
    } finally {
      await worker.close();
      connection.disconnect();
    }
  };

  beforeAll(async () => {
    fx = await createDashboardFixture("board-audit");
    base = fx.dashboard.url;
    jar = (await login(base, "alice", PASSWORDS.alice)).jar;
  });
  afterAll(() => fx?.close());
  afterEach(async () => {
    await fx.dashboard.jobs.queue("migration").obliterate({ force: true });
    await fx.dashboard.db.query("DELETE FROM migration_log");
  });

  it("a queue paused and resumed from the board, one or all: a migration_log row each, naming the operator", async () => {
    expect((await write("PUT", "/queues/api/queues/migration/pause")).status).toBe(200);
    expect(await fx.dashboard.jobs.queue("migration").isPaused()).toBe(true);
    expect((await write("PUT", "/queues/api/queues/migration/resume")).status).toBe(200);
    expect((await write("PUT", "/queues/api/queues/pause")).status).toBe(200);
    expect((await write("PUT", "/queues/api/queues/resume")).status).toBe(200);
    const rows = await boardRows();
    expect(rows).toEqual([
      { level: "info", job: "board", subject: "queue:migration", message: "queue migration paused from the board by alice", details: { route: "PUT /api/queues/:queueName/pause", status: 200, by: "alice", queue: "migration" } },
      { level: "info", job: "board", subject: "queue:migration", message: "queue migration resumed from the board by alice", details: { route: "PUT /api/queues/:queueName/resume", status: 200, by: "alice", queue: "migration" } },
      { level: "info", job: "board", subject: "queues", message: "all queues paused from the board by alice", details: { route: "PUT /api/queues/pause", status: 200, by: "alice" } },
      { level: "info", job: "board", subject: "queues", message: "all queues resumed from the board by alice", details: { route: "PUT /api/queues/resume", status: 200, by: "alice" } },
    ]);
    // No secret: not the password, the session, its CSRF token or an API token.
    const text = JSON.stringify(rows);
    for (const secret of [...fx.secrets, jar.get("fleet_session")!, jar.get("XSRF-TOKEN")!]) expect(text).not.toContain(secret);
  });

  it("a job retried from the board: a LOG row in its operation's history and a line in its log, naming the operator", async () => {
    const id = await failedOperation(7);
    expect((await write("PUT", `/queues/api/queues/migration/${id}/retry`)).status).toBe(204);
    expect(await fx.dashboard.jobs.queue("migration").getJobState(id)).toBe("waiting");
    expect(await statusRows(id)).toEqual([
      { kind: "STATE", message: "submitted by token:ci" },
      { kind: "LOG", message: "retried from the board by alice (it was failed)" },
    ]);
    // Where operators look: the API and `fleet ops show` (BullMQ's log while it has the job, the
    // history's once it has pruned it).
    const shown = (await (await send(base, `/api/operations/${id}`, { headers: { authorization: `Bearer ${fx.apiToken}` } })).json()) as { log: string[] };
    expect(shown.log).toEqual(["retried from the board by alice (it was failed)"]);
    await fx.dashboard.jobs.queue("migration").remove(id);
    const past = (await (await send(base, `/api/operations/${id}`, { headers: { authorization: `Bearer ${fx.apiToken}` } })).json()) as { source: string; log: string[] };
    expect(past.source).toBe("history");
    expect(past.log.at(-1)).toMatch(/ log: retried from the board by alice \(it was failed\)$/);
    expect(await boardRows()).toEqual([]);
  });

  it("a submitted job removed from the board before it started: its history says REMOVED and by whom, as after a cancel", async () => {
    const res = await send(base, "/api/operations", { method: "POST", headers: { authorization: `Bearer ${fx.apiToken}`, "content-type": "application/json" }, body: JSON.stringify({ name: "migrate-range", data: { rangeId: 6 } }) });
    const { id } = (await res.json()) as { id: string };
    expect((await write("PUT", `/queues/api/queues/migration/${id}/clean`)).status).toBe(204);
    expect(await fx.dashboard.jobs.queue("migration").getJob(id)).toBeUndefined();
    expect((await fx.dashboard.db.query(`SELECT state::text, finished_at IS NOT NULL AS finished FROM operations WHERE id = $1`, [id])).rows[0]).toEqual({ state: "REMOVED", finished: true });
    expect(await statusRows(id)).toEqual([
      { kind: "STATE", message: "submitted by token:ci" },
      { kind: "LOG", message: "removed from the board by alice (it was waiting)" },
      { kind: "STATE", message: "cancelled by alice from the board before it started" },
    ]);
    const past = (await (await send(base, `/api/operations/${id}`, { headers: { authorization: `Bearer ${fx.apiToken}` } })).json()) as { source: string; state: string };
    expect([past.source, past.state]).toEqual(["history", "removed"]);
  });

  it("a job the history does not know (queued by the fleet, never started): recorded in migration_log, no operation made up", async () => {
    const job = await fx.dashboard.jobs.enqueue("migrate-range", { rangeId: 8 });
    expect((await write("PUT", `/queues/api/queues/migration/${job.id}/clean`)).status).toBe(204);
    expect(await fx.dashboard.jobs.queue("migration").getJob(job.id!)).toBeUndefined();
    expect((await fx.dashboard.db.query(`SELECT 1 FROM operations WHERE id = $1`, [job.id])).rowCount).toBe(0);
    expect(await statusRows(job.id!)).toEqual([]);
    expect(await boardRows()).toEqual([
      {
        level: "warn",
        job: "board",
        subject: `operation:${job.id}`,
        message: `operation ${job.id} (migrate-range, queue migration) removed from the board by alice (it was waiting)`,
        details: { route: "PUT /api/queues/:queueName/:jobId/clean", status: 204, by: "alice", queue: "migration", name: "migrate-range", state: "waiting" },
      },
    ]);
  });

  it("a bulk retry or clean by status is one row with the count, not one per job", async () => {
    const ids = [await failedOperation(11), await failedOperation(12)];
    expect((await write("PUT", "/queues/api/queues/migration/retry/failed")).status).toBe(200);
    for (const id of ids) expect(await fx.dashboard.jobs.queue("migration").getJobState(id)).toBe("waiting");
    expect(await boardRows()).toEqual([
      {
        level: "info",
        job: "board",
        subject: "queue:migration",
        message: "failed jobs of queue migration retried from the board by alice: 2 retried",
        details: { route: "PUT /api/queues/:queueName/retry/:queueStatus", status: 200, by: "alice", queue: "migration", queueStatus: "failed", retried: 2, skipped: 0 },
      },
    ]);
    // The bulk retry is in each job's history only as its next attempts: one row says who.
    for (const id of ids) expect((await statusRows(id)).filter((r) => r.kind === "LOG")).toEqual([]);

    await fx.dashboard.db.query("DELETE FROM migration_log");
    expect((await write("PUT", "/queues/api/queues/migration/clean/waiting")).status).toBe(200);
    expect(await boardRows()).toEqual([
      expect.objectContaining({ level: "warn", subject: "queue:migration", message: expect.stringMatching(/^waiting jobs of queue migration cleaned from the board by alice \(2 before, \d after\)$/) }),
    ]);
  });

  it("a board clean of queued durable jobs forgets their kept requests first; none is queued again; one that cannot be forgotten refuses the clean", async () => {
    // A clean left the requests of the remote commands it removed in job_requests; the recovery
    // pass took them for a removal on purpose only while the fleet epoch stayed, so a partial
    // loss of Redis lost requests for good. Every removal through Fleet now forgets its request,
    // so a missing job is a loss and is queued again: a board clean must forget, or the commands
    // it removed would run.
    const remote = fx.dashboard.jobs.queue("remote");
    const enqueue = async (project: string, delayMs?: number) =>
      (await fx.dashboard.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project } }, delayMs ? { delayMs } : {})).id!;
    const kept = async () => (await fx.dashboard.db.query<{ id: string }>("SELECT id FROM job_requests ORDER BY id")).rows.map((r) => r.id);
    const one = await enqueue("one");
    const old = await enqueue("old");
    const later = await enqueue("later", 3_600_000);
    // bull-board's clean by status spares jobs younger than 5 s.
    await new Promise((r) => setTimeout(r, 5_500));
    const young = await enqueue("young");
    expect(await kept()).toEqual([one, old, later, young].sort());

    // One job cleaned from the board: its request goes with it, and the record says so.
    expect((await write("PUT", `/queues/api/queues/remote/${one}/clean`)).status).toBe(204);
    expect(await remote.getJobState(one)).toBe("unknown");
    expect(await kept()).toEqual([old, later, young].sort());
    expect(await boardRows()).toEqual([expect.objectContaining({ subject: `operation:${one}`, message: expect.stringMatching(/removed from the board by alice \(it was waiting\); its kept request forgotten$/) })]);

    // The waiting jobs cleaned by status: the old one and its request go; the young one (spared
    // by the grace) and the delayed one keep theirs.
    await fx.dashboard.db.query("DELETE FROM migration_log");
    expect((await write("PUT", "/queues/api/queues/remote/clean/waiting")).status).toBe(200);
    expect(await remote.getJobState(old)).toBe("unknown");
    expect(await remote.getJobState(young)).toBe("waiting");
    expect(await remote.getJobState(later)).toBe("delayed");
    expect(await kept()).toEqual([later, young].sort());
    expect(await boardRows()).toEqual([expect.objectContaining({ subject: "queue:remote", details: expect.objectContaining({ requestsForgotten: [old] }) })]);

    // The recovery pass, its lock period over: nothing to queue again (without the clean's
    // forgetting, both removed commands came back here).
    const log = createLogger({ LOG_LEVEL: "silent", LOG_FORMAT: "json", name: "test" });
    const deps = { db: fx.dashboard.db, jobs: fx.dashboard.jobs };
    await replayLostRequests(deps, log, { job: "test", missingMs: 100 });
    await new Promise((r) => setTimeout(r, 200));
    expect(await replayLostRequests(deps, log, { job: "test", missingMs: 100 })).toEqual({ ended: 0, missing: 0, replayed: 0 });
    for (const id of [one, old]) expect(await remote.getJobState(id)).toBe("unknown");

    // A database that cannot forget a request refuses the clean: the job stays, with its request.
    const db = createPool({ connectionString: fx.db.url, max: 1 });
    try {
      await db.query(`CREATE FUNCTION b_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'b: refused'; END $$`);
      await db.query("CREATE TRIGGER b_refuse_delete BEFORE DELETE ON job_requests FOR EACH ROW EXECUTE FUNCTION b_refuse_delete()");
      const refused = await write("PUT", `/queues/api/queues/remote/${later}/clean`);
      expect(refused.status).toBe(503);
      expect(((await refused.json()) as { error: string }).error).toMatch(/nothing was removed/);
      expect(await remote.getJobState(later)).toBe("delayed");
      expect(await kept()).toEqual([later, young].sort());
    } finally {
      await db.query("DROP TRIGGER IF EXISTS b_refuse_delete ON job_requests");
      await db.query("DROP FUNCTION IF EXISTS b_refuse_delete()");
      await db.end();
    }
    await remote.obliterate({ force: true });
    await fx.dashboard.db.query("DELETE FROM job_requests");
  }, 30_000);

  it("a board clean of completed or failed jobs leaves the kept requests of the queue's other jobs where they are (a put-back that fails loses none)", async () => {
    // Found by a review: a clean by status took out every kept request of the queue older than
    // the grace, whatever its job's status, and put back those whose job stayed afterwards. A
    // clean of the completed jobs thus took out the requests of the waiting and delayed remote
    // commands, and a dashboard killed during the clean (or a database that refused the put-back)
    // left those commands in Redis without their copy: a later loss of Redis lost them for good.
    // Only the requests of jobs in the cleaned status are now taken out.
    const remote = fx.dashboard.jobs.queue("remote");
    const enqueue = async (project: string, delayMs?: number) =>
      (await fx.dashboard.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project } }, delayMs ? { delayMs } : {})).id!;
    const kept = async () => (await fx.dashboard.db.query<{ id: string }>("SELECT id FROM job_requests ORDER BY id")).rows.map((r) => r.id);
    // A command that failed for good keeps its request (only a success forgets it): cleaning the
    // failed jobs forgets it with its job.
    const broken = await enqueue("broken");
    const connection = new Redis(fx.config.REDIS_URL, { maxRetriesPerRequest: null });
    const worker = new Worker("remote", null, { connection, prefix: `{${fx.prefix}}`, autorun: false });
    try {
      const job = (await worker.getNextJob("test-token"))!;
      expect(job.id).toBe(broken);
      await job.moveToFailed(new UnrecoverableError("exit 2"), "test-token", false);
    } finally {
      await worker.close();
      connection.disconnect();
    }
    const waiting = await enqueue("waiting");
    const later = await enqueue("later", 3_600_000);
    // Kept long ago, as a command queued an hour ago (past the clean's 5 s grace); the failed
    // job ended long ago too (bull-board's clean spares jobs finished in the last 5 s).
    await fx.dashboard.db.query("UPDATE job_requests SET created_at = now() - interval '1 hour'");
    await new Promise((r) => setTimeout(r, 5_500));
    expect(await kept()).toEqual([broken, waiting, later].sort());
    // The put-back refused, as the database refuses it in a blip (the same loss as a dashboard
    // killed between the take and the put-back).
    const db = createPool({ connectionString: fx.db.url, max: 1 });
    try {
      await db.query(`CREATE FUNCTION e_refuse_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'e: refused'; END $$`);
      await db.query("CREATE TRIGGER e_refuse_insert BEFORE INSERT ON job_requests FOR EACH ROW EXECUTE FUNCTION e_refuse_insert()");
      for (const status of ["completed", "failed"]) expect((await write("PUT", `/queues/api/queues/remote/clean/${status}`)).status).toBe(200);
    } finally {
      await db.query("DROP TRIGGER IF EXISTS e_refuse_insert ON job_requests");
      await db.query("DROP FUNCTION IF EXISTS e_refuse_insert()");
      await db.end();
    }
    expect(await remote.getJobState(broken)).toBe("unknown");
    expect(await remote.getJobState(waiting)).toBe("waiting");
    expect(await remote.getJobState(later)).toBe("delayed");
    expect(await kept()).toEqual([waiting, later].sort());
    expect(await boardRows()).toEqual([
      expect.objectContaining({ subject: "queue:remote", message: expect.stringMatching(/^completed jobs of queue remote cleaned/) }),
      expect.objectContaining({ subject: "queue:remote", message: expect.stringMatching(/^failed jobs of queue remote cleaned/), details: expect.objectContaining({ requestsForgotten: [broken] }) }),
    ]);
    await remote.obliterate({ force: true });
    await fx.dashboard.db.query("DELETE FROM job_requests");
  }, 30_000);

  it("refused and failed writes leave no record of being done", async () => {
    const logRows = async () => (await fx.dashboard.db.query(`SELECT 1 FROM operation_status WHERE kind = 'LOG'`)).rowCount;
    const logged = await logRows();
    const job = await fx.dashboard.jobs.enqueue("migrate-range", { rangeId: 9 });
    const viewer = (await login(base, "victor", PASSWORDS.victor)).jar;
    const answers = [
      // Not on the allow-list.
      await write("PUT", "/queues/api/queues/migration/obliterate"),
      await write("PUT", "/queues/api/queues/migration/empty"),
      // A viewer; the read-only board.
      await write("PUT", "/queues/api/queues/migration/pause", viewer),
      await write("PUT", "/queues/readonly/api/queues/migration/pause"),
      // No CSRF token.
      await send(base, "/queues/api/queues/migration/pause", { method: "PUT", jar }),
      // Allowed, but bull-board refuses: a waiting job is not retriable; no such job or queue.
      await write("PUT", `/queues/api/queues/migration/${job.id}/retry`),
      await write("PUT", "/queues/api/queues/migration/no-such-job/retry"),
      await write("PUT", "/queues/api/queues/no-such-queue/pause"),
      // A status BullMQ does not have cleans nothing: refused, or it was recorded as a clean with
      // the URL's text (a newline and a line of its own in it).
      await write("PUT", `/queues/api/queues/migration/clean/${encodeURIComponent("x\n2026-12-11T10:00:00Z info board queue:migration paused by bob")}`),
      await write("PUT", "/queues/api/queues/migration/retry/nonsense"),
    ];
    expect(answers.map((r) => r.status)).toEqual([403, 403, 403, 403, 403, 400, 404, 404, 400, 400]);
    expect(await fx.dashboard.jobs.queue("migration").isPaused()).toBe(false);
    expect(await fx.dashboard.jobs.queue("migration").count()).toBe(1);
    expect(await boardRows()).toEqual([]);
    expect(await logRows()).toBe(logged);
  });
});
