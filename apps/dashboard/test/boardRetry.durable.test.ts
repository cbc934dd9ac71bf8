import { UnrecoverableError, Worker } from "bullmq";
import { Redis } from "ioredis";
import { createLogger } from "@fleet/core/logger";
import { operationRef } from "@fleet/core/operations";
import { forgetJobRequests } from "@fleet/db/sql/jobRequests";
import { OperationHistory } from "@fleet/db/sql/operations";
import { replayLostRequests } from "@fleet/jobs/maintenance/replayRequests";
import { startPrivateDatabase } from "@fleet/testing/privateDatabase";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { PASSWORDS, createDashboardFixture, login, send } from "./dashboardFixture";
import type { CookieJar, DashboardFixture } from "./dashboardFixture";

/**
 * A durable job (a remote command) retried from the board is as durable as when it was
 * submitted: its request is kept again before bull-board puts it back to wait. Before, the
 * failed job's request had been forgotten when it ended, the retry added none, and the history
 * still said FAILED: Redis losing the retried command (a private redis-server emptied) lost it
 * for good, where the same command submitted anew was queued again by the recovery pass.
 */
describe("a board retry of durable jobs keeps their requests", () => {
  let redis: PrivateRedis;
  let fx: DashboardFixture;
  let base: string;
  let jar: CookieJar;
  const log = createLogger({ LOG_LEVEL: "silent", LOG_FORMAT: "json", name: "test" });

  const write = (method: string, path: string) => send(base, path, { method, jar, headers: { "x-xsrf-token": jar.get("XSRF-TOKEN") ?? "", origin: base } });
  const kept = async () => (await fx.dashboard.db.query<{ id: string; attempts_made: number }>("SELECT id, attempts_made FROM job_requests ORDER BY id")).rows;
  const historyState = async (id: string) => (await fx.dashboard.db.query<{ state: string }>("SELECT state::text FROM operations WHERE id = $1", [id])).rows[0]?.state;
  const pass = () => replayLostRequests({ db: fx.dashboard.db, jobs: fx.dashboard.jobs }, log, { job: "test", missingMs: 100 });

  /** A remote command submitted through the API, then failed for good as a worker fails it, and recorded so. */
  const failedCommand = async (project: string): Promise<string> => {
    const res = await send(base, "/api/operations", {
      method: "POST",
      headers: { authorization: `Bearer ${fx.apiToken}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "remote-command", data: { server: "nas1", command: "export", values: { project } } }),
    });
    expect(res.status).toBe(202);
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const worker = new Worker("remote", null, { connection, prefix: `{${fx.prefix}}`, autorun: false });
    try {
      const job = (await worker.getNextJob("test-token"))!;
      await job.moveToFailed(new UnrecoverableError("exit 2"), "test-token", false);
      // What the runner records of an attempt that failed for good.
      await new OperationHistory(fx.dashboard.db).finished(operationRef(job), { state: "FAILED", attempts: 1, error: "remote: exit 2" });
      expect(await job.getState()).toBe("failed");
      return job.id!;
    } finally {
      await worker.close();
      connection.disconnect();
    }
  };

  beforeAll(async () => {
    redis = await startPrivateRedis();
    fx = await createDashboardFixture("board-retry", { REDIS_URL: redis.url });
    base = fx.dashboard.url;
    jar = (await login(base, "alice", PASSWORDS.alice)).jar;
  });
  afterAll(async () => {
    await fx?.close();
    await redis?.stop();
  });

  it("a retried command that Redis loses before it runs is queued again, one retried by id or by status", async () => {
    const one = await failedCommand("one");
    const two = await failedCommand("two");
    // The recovery pass forgets the requests of the ended jobs.
    expect(await pass()).toEqual({ ended: 2, missing: 0, replayed: 0 });
    expect(await kept()).toEqual([]);

    expect((await write("PUT", `/queues/api/queues/remote/${one}/retry`)).status).toBe(204);
    expect((await write("PUT", "/queues/api/queues/remote/retry/failed")).status).toBe(200);
    const remote = fx.dashboard.jobs.queue("remote");
    for (const id of [one, two]) expect(await remote.getJobState(id)).toBe("waiting");
    // Kept again, attempts from 0 (BullMQ's count of the retried job starts over), the history waiting.
    expect(await kept()).toEqual([one, two].sort().map((id) => ({ id, attempts_made: 0 })));
    expect([await historyState(one), await historyState(two)]).toEqual(["WAITING", "WAITING"]);
    // A pass while the jobs wait keeps them.
    expect(await pass()).toEqual({ ended: 0, missing: 0, replayed: 0 });

    // Redis loses every key before a worker takes them.
    await redis.flushAll();
    expect(await pass()).toEqual({ ended: 0, missing: 2, replayed: 0 });
    await new Promise((r) => setTimeout(r, 200));
    expect(await pass()).toEqual({ ended: 0, missing: 0, replayed: 2 });
    for (const id of [one, two]) {
      expect(await remote.getJobState(id)).toBe("waiting");
      expect((await remote.getJob(id))!.data).toEqual({ server: "nas1", command: "export", values: { project: id === one ? "one" : "two" } });
    }
  }, 30_000);

  it("a retried job under a reused id is its own request's: the older job's history row does not end it", async () => {
    // The request a retry keeps records its job's time: kept without it, it was matched with the
    // history's row by id, and under a reused id whose row is still the older job's (COMPLETED;
    // the new job's own row never written) the pass forgot the retried command as ended.
    const jobs = fx.dashboard.jobs;
    const remote = jobs.queue("remote");
    const history = new OperationHistory(fx.dashboard.db);
    const id = "api-remote-command-reused-by-retry";
    const command = (project: string) => ({ server: "nas1", command: "export", values: { project } });
    // The older job: completed, its request forgotten, pruned by BullMQ.
    const older = await jobs.submit("remote-command", command("older"), { jobId: id, submittedBy: "token:ci" });
    await history.submitted(operationRef(older.job), "WAITING", "token:ci");
    await history.finished(operationRef(older.job), { state: "COMPLETED", attempts: 1 });
    await older.job.remove();
    await forgetJobRequests(fx.dashboard.db, [id]);
    // The new job under the id, whose history row was never written, fails for good.
    await new Promise((r) => setTimeout(r, 5));
    await jobs.enqueue("remote-command", command("newer"), { jobId: id });
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const worker = new Worker("remote", null, { connection, prefix: `{${fx.prefix}}`, autorun: false });
    try {
      for (let taken = await worker.getNextJob("test-token"); taken; taken = await worker.getNextJob("test-token")) {
        if (taken.id === id) {
          await taken.moveToFailed(new UnrecoverableError("exit 2"), "test-token", false);
          break;
        }
      }
    } finally {
      await worker.close();
      connection.disconnect();
    }
    expect(await remote.getJobState(id)).toBe("failed");
    await pass();
    expect((await kept()).map((r) => r.id)).not.toContain(id);

    // Signed in again: the emptied Redis of the test before took the session with it.
    jar = (await login(base, "alice", PASSWORDS.alice)).jar;
    expect((await write("PUT", `/queues/api/queues/remote/${id}/retry`)).status).toBe(204);
    expect((await kept()).map((r) => r.id)).toContain(id);
    await redis.flushAll();
    await pass();
    expect((await kept()).map((r) => r.id)).toContain(id);
    await new Promise((r) => setTimeout(r, 200));
    await pass();
    expect(await remote.getJobState(id)).toBe("waiting");
    expect((await remote.getJob(id))!.data).toEqual(command("newer"));
  }, 30_000);
});

/** The same retry while PostgreSQL (a private cluster) is down: refused, nothing retried. */
describe("a board retry of durable jobs with the database down", () => {
  let postgres: PrivatePostgres;
  let fx: DashboardFixture;
  let base: string;
  let jar: CookieJar;

  beforeAll(async () => {
    const database = await startPrivateDatabase();
    postgres = database.postgres;
    fx = await createDashboardFixture("board-retry-pgdown", { DATABASE_URL: database.url });
    base = fx.dashboard.url;
    jar = (await login(base, "alice", PASSWORDS.alice)).jar;
  }, 60_000);
  afterAll(async () => {
    await fx?.close();
    await postgres?.destroy();
  });

  it("is refused (503) and leaves the job failed; once the database is back it is done, with the request kept", async () => {
    const remote = fx.dashboard.jobs.queue("remote");
    const job = await fx.dashboard.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "down" } });
    const connection = new Redis(fx.config.REDIS_URL, { maxRetriesPerRequest: null });
    const worker = new Worker("remote", null, { connection, prefix: `{${fx.prefix}}`, autorun: false });
    try {
      const taken = (await worker.getNextJob("test-token"))!;
      await taken.moveToFailed(new UnrecoverableError("exit 2"), "test-token", false);
    } finally {
      await worker.close();
      connection.disconnect();
    }
    // The recovery pass forgets the ended job's request.
    const log = createLogger({ LOG_LEVEL: "silent", LOG_FORMAT: "json", name: "test" });
    expect(await replayLostRequests({ db: fx.dashboard.db, jobs: fx.dashboard.jobs }, log, { job: "test", missingMs: 100 })).toEqual({ ended: 1, missing: 0, replayed: 0 });
    const retry = () => send(base, `/queues/api/queues/remote/${job.id}/retry`, { method: "PUT", jar, headers: { "x-xsrf-token": jar.get("XSRF-TOKEN") ?? "", origin: base } });

    await postgres.stopServer("fast");
    try {
      const refused = await retry();
      expect(refused.status).toBe(503);
      expect(((await refused.json()) as { error: string }).error).toMatch(/nothing was retried/);
      expect(await remote.getJobState(job.id!)).toBe("failed");
    } finally {
      await postgres.startServer();
    }
    for (let i = 0; i < 50; i++) {
      if ((await retry()).status === 204) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(await remote.getJobState(job.id!)).toBe("waiting");
    expect((await fx.dashboard.db.query<{ id: string }>("SELECT id FROM job_requests")).rows).toEqual([{ id: job.id }]);
    await remote.obliterate({ force: true });
  }, 60_000);
});
