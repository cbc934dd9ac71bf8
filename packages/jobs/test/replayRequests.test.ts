import { cancelOperation, findOperation, operationRef } from "@fleet/core/operations";
import { Worker } from "bullmq";
import { Redis } from "ioredis";
import { JobClient } from "@fleet/core/jobClient";
import { tryInventoryLock } from "@fleet/db/sql/inventory";
import { noteRequestsEnded } from "@fleet/core/endedRequests";
import { forgetJobRequests, jobRequestStore, keepRequestsRunAgain, takeJobRequests } from "@fleet/db/sql/jobRequests";
import { OperationHistory } from "@fleet/db/sql/operations";
import { testRedisUrl } from "@fleet/testing/testRedis";
import { fleetContracts } from "../src/contracts";
import type { FleetJobs } from "../src/contracts";
import { replayLostRequests } from "../src/maintenance/replayRequests";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * The rules of job_requests (remote commands kept in PostgreSQL), against real Redis and
 * PostgreSQL: a request is kept before its job is queued; one whose job ended is forgotten, never
 * queued again (a cancelled command must stay cancelled); one missing from Redis is queued again
 * only once passes have found it missing for the lock period, under its id, its submitter and site kept.
 */
describe("durable requests (job_requests)", () => {
  let h: PipelineHarness;
  beforeEach(async () => {
    h = await createPipelineHarness("durable-requests");
  });
  afterEach(async () => {
    await h.close();
  });

  const submit = async (project: string) => {
    const { id, job } = await h.runtime.deps.jobs.submit("remote-command", { server: "nas1", command: "export", values: { project } });
    await new OperationHistory(h.runtime.db).submitted(operationRef(job), "WAITING", "alice", "north");
    return id;
  };
  const kept = async () => (await h.runtime.db.query<{ id: string; replays: number; missing: boolean }>("SELECT id, replays, missing_since IS NOT NULL AS missing FROM job_requests ORDER BY id")).rows;
  const queue = () => h.runtime.deps.jobs.queue("remote");
  /** A pass that follows a loss of Redis, and one of the passes after it (the same rules: a missing job is a loss). */
  const afterLoss = { job: "test" };
  const later = { job: "test" };

  it("forgets what ended, leaves what waits, and queues again what Redis lost, after the lock period", async () => {
    const cancelled = await submit("cancelled");
    const waiting = await submit("waiting");
    const lost = await submit("lost");
    expect((await kept()).map((r) => r.id).sort()).toEqual([cancelled, waiting, lost].sort());

    // Cancelled by an operator: BullMQ removes the job and the history says REMOVED.
    const found = await findOperation([queue()], cancelled);
    expect(await cancelOperation(h.runtime.redis, h.runtime.prefix, found!)).toEqual({ kind: "removed", was: "waiting" });
    await new OperationHistory(h.runtime.db).removed(operationRef(found!.job), "bob");
    // Lost: the job is gone from Redis, nothing in the history says it ended.
    await (await queue().getJob(lost))!.remove();

    const deps = { db: h.runtime.db, jobs: h.runtime.deps.jobs };
    // First pass, after the loss was seen: the cancelled one is forgotten; the lost one is only marked missing.
    expect(await replayLostRequests(deps, h.log, { ...afterLoss, missingMs: 1_500 })).toEqual({ ended: 1, missing: 1, replayed: 0 });
    expect(await kept()).toEqual(expect.arrayContaining([{ id: lost, replays: 0, missing: true }, { id: waiting, replays: 0, missing: false }]));
    expect((await kept()).length).toBe(2);
    // Still inside the lock period: not queued again yet.
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 1_500 })).toEqual({ ended: 0, missing: 1, replayed: 0 });
    expect(await queue().getJobState(lost)).toBe("unknown");

    await new Promise((r) => setTimeout(r, 1_600));
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 1_500 })).toEqual({ ended: 0, missing: 0, replayed: 1 });
    const again = await queue().getJob(lost);
    expect(again?.data).toEqual({ server: "nas1", command: "export", values: { project: "lost" } });
    expect(await again!.getState()).toBe("waiting");
    expect(await queue().getJobState(cancelled)).toBe("unknown");
    expect(await kept()).toEqual(expect.arrayContaining([{ id: lost, replays: 1, missing: false }]));
    // Its site's tokens go on seeing it (the new job's row would otherwise belong to no site).
    const history = await h.runtime.db.query<{ state: string; submitted_by: string }>("SELECT state::text, submitted_by, submitted_site FROM operations WHERE id = $1", [lost]);
    expect(history.rows).toEqual([{ state: "WAITING", submitted_by: "alice", submitted_site: "north" }]);

  });

  it("a request under a reused id is its own: not forgotten for an older job's end, queued again with its own submitter and site", async () => {
    // Found by a review: the pass matched the history's row by id only. Under a reused id (a
    // client's id, once its older job was pruned) whose new submission was not recorded in the
    // history (the dashboard stopped between the add and the row, or PostgreSQL refused the
    // row), the row was still the older job's: COMPLETED, so the new request was forgotten as
    // ended, and Redis losing its job lost the command for good.
    const jobs = h.runtime.deps.jobs;
    const history = new OperationHistory(h.runtime.db);
    const id = "api-remote-command-nightly-export";
    const command = (project: string) => ({ server: "nas1", command: "export", values: { project } });
    // The older job: alice's for site north, completed; its end forgot its request, and BullMQ pruned it.
    const older = await jobs.submit("remote-command", command("older"), { jobId: id, submittedBy: "token:alice", site: "north" });
    await history.submitted(operationRef(older.job), "WAITING", "token:alice", "north");
    await history.finished(operationRef(older.job), { state: "COMPLETED", attempts: 1 });
    await forgetJobRequests(h.runtime.db, [id]);
    await older.job.remove();
    await new Promise((r) => setTimeout(r, 5));
    // The new request, bob's for site south: kept and queued; its history row never written.
    const newer = await jobs.submit("remote-command", command("newer"), { jobId: id, submittedBy: "token:bob", site: "south" });
    expect(newer.deduplicated).toBe(false);
    expect(newer.job.timestamp).toBeGreaterThan(older.job.timestamp);
    expect((await kept()).map((r) => r.id)).toEqual([id]);
    // Redis loses its job.
    await newer.job.remove();
    const deps = { db: h.runtime.db, jobs };
    expect(await replayLostRequests(deps, h.log, { ...afterLoss, missingMs: 100 })).toEqual({ ended: 0, missing: 1, replayed: 0 });
    await new Promise((r) => setTimeout(r, 200));
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 0, missing: 0, replayed: 1 });
    const again = await queue().getJob(id);
    expect(again?.data).toEqual(command("newer"));
    // Its history row is the new job's, with who asked for it: bob, for south (not alice's north).
    const row = await h.runtime.db.query<{ state: string; submitted_by: string; submitted_site: string; created_at: Date }>("SELECT state::text, submitted_by, submitted_site, created_at FROM operations WHERE id = $1", [id]);
    expect(row.rows).toEqual([{ state: "WAITING", submitted_by: "token:bob", submitted_site: "south", created_at: new Date(again!.timestamp) }]);
    // From now on the row is the request's job's: it ends with it.
    await history.finished(operationRef(again!), { state: "COMPLETED", attempts: 1 });
    await again!.remove();
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 1, missing: 0, replayed: 0 });
    expect(await kept()).toEqual([]);
  });

  it("keeps no request for a submission BullMQ answered with the older job it still holds under the id", async () => {
    // With the request matched to its own job's history row, one BullMQ deduplicated onto an
    // older finished job (kept for KEEP_COMPLETED) would no longer be taken as ended by that
    // job's row: it must not be kept at all, or a loss of Redis would queue it again.
    const jobs = h.runtime.deps.jobs;
    const id = "api-remote-command-weekly-export";
    const command = (project: string) => ({ server: "nas1", command: "export", values: { project } });
    const older = await jobs.submit("remote-command", command("older"), { jobId: id, submittedBy: "token:alice" });
    // A worker takes it and completes it (BullMQ keeps it); its end forgets its request.
    const connection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    const worker = new Worker("remote", undefined, { connection, prefix: queue().opts.prefix, autorun: false });
    try {
      const taken = await worker.getNextJob("test-token");
      expect(taken?.id).toBe(older.id);
      await taken!.moveToCompleted("done", "test-token", false);
    } finally {
      await worker.close();
      connection.disconnect();
    }
    await forgetJobRequests(h.runtime.db, [id]);
    await new Promise((r) => setTimeout(r, 5));
    const again = await jobs.submit("remote-command", command("again"), { jobId: id, submittedBy: "token:bob" });
    expect(again).toMatchObject({ id, deduplicated: true });
    expect(await queue().getJobState(id)).toBe("completed");
    expect(await kept()).toEqual([]);
  });

  it("gives a durable kind's add its timestamp, never a template's (a schedule, a flow)", async () => {
    // The timestamp is what ties a kept request to its job's history row; a schedule's template
    // (prepareJob) is many adds, and one fixed time in it would be every run's creation time.
    const jobs = h.runtime.deps.jobs;
    expect(jobs.prepareJob("inventory-scan", {}).opts).not.toHaveProperty("timestamp");
    const before = Date.now();
    const { job } = await jobs.submit("inventory-scan", { prefix: "t/" });
    const row = await h.runtime.db.query<{ job_created_at: Date }>("SELECT job_created_at FROM job_requests WHERE id = $1", [job.id]);
    expect(row.rows).toEqual([{ job_created_at: new Date((await jobs.queue("maintenance").getJob(job.id!))!.timestamp) }]);
    expect(job.timestamp).toBeGreaterThanOrEqual(before);
  });

  it("an operator's unpack, checksum audit and inventory scan are kept and queued again after a loss; a deduplicated submission keeps nothing", async () => {
    // Nothing in PostgreSQL re-derives these either: before, a loss of Redis lost them for good.
    const jobs = h.runtime.deps.jobs;
    const unpack = await jobs.submit("unpack", { manifest: "range-1/part-1-9.manifest.json" });
    const audit = await jobs.submit("checksum-audit", { prefix: "a/", limit: 10 });
    const scan = await jobs.submit("inventory-scan", { prefix: "in/" });
    expect((await kept()).map((r) => r.id).sort()).toEqual([unpack.id, audit.id, scan.id].sort());
    // The same unpack again while the first waits: BullMQ keeps one job, and one request.
    const again = await jobs.submit("unpack", { manifest: "range-1/part-1-9.manifest.json" });
    expect(again).toMatchObject({ id: unpack.id, deduplicated: true });
    expect((await kept()).map((r) => r.id).sort()).toEqual([unpack.id, audit.id, scan.id].sort());

    for (const { job } of [unpack, audit, scan]) await job.remove();
    const deps = { db: h.runtime.db, jobs };
    expect(await replayLostRequests(deps, h.log, { ...afterLoss, missingMs: 100 })).toEqual({ ended: 0, missing: 3, replayed: 0 });
    await new Promise((r) => setTimeout(r, 200));
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 0, missing: 0, replayed: 3 });
    expect((await jobs.queue("migration").getJob(unpack.id))?.data).toEqual({ manifest: "range-1/part-1-9.manifest.json" });
    expect((await jobs.queue("maintenance").getJob(audit.id))?.data).toEqual({ prefix: "a/", limit: 10 });
    expect((await jobs.queue("maintenance").getJob(scan.id))?.data).toEqual({ prefix: "in/" });

    // Lost again, and the same unpack submitted anew before the pass: the new job carries it,
    // and the lost request is forgotten, not queued beside it.
    await (await jobs.queue("migration").getJob(unpack.id))!.remove();
    const anew = await jobs.submit("unpack", { manifest: "range-1/part-1-9.manifest.json" });
    expect(anew.deduplicated).toBe(false);
    expect(await replayLostRequests(deps, h.log, { ...afterLoss, missingMs: 100 })).toEqual({ ended: 0, missing: 1, replayed: 0 });
    await new Promise((r) => setTimeout(r, 200));
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 1, missing: 0, replayed: 0 });
    expect((await kept()).map((r) => r.id).sort()).toEqual([anew.id, audit.id, scan.id].sort());
    expect(await jobs.queue("migration").getJobState(unpack.id)).toBe("unknown");
    const log = await h.runtime.db.query<{ message: string }>("SELECT message FROM migration_log WHERE subject = $1 ORDER BY id", [`operation:${unpack.id}`]);
    expect(log.rows.at(-1)).toEqual({ message: expect.stringContaining(`the same work is queued already as ${anew.id}`) });
  });

  it("a lost request whose dedupe key another job with other work holds waits for it, not forgotten as covered", async () => {
    // Found by review: a replay that BullMQ deduplicated onto any other job was forgotten as
    // "the same work queued already", but a kind's dedupe id need not name all its work: every
    // inventory scan shares one (whatever its prefix), an audit's is its prefix (not its limit),
    // an unpack's its manifest and target (not ifExists). A lost scan of in/ was forgotten for
    // a scan of other/ and never ran.
    const jobs = h.runtime.deps.jobs;
    const maintenance = jobs.queue("maintenance");
    const lost = await jobs.submit("inventory-scan", { prefix: "in/", restart: true });
    await lost.job.remove();
    const deps = { db: h.runtime.db, jobs };
    expect(await replayLostRequests(deps, h.log, { ...afterLoss, missingMs: 100 })).toEqual({ ended: 0, missing: 1, replayed: 0 });
    // Another operator's scan of another prefix, submitted since the loss, holds the key.
    const other = await jobs.submit("inventory-scan", { prefix: "other/" });
    expect(other.deduplicated).toBe(false);
    await new Promise((r) => setTimeout(r, 200));
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 0, missing: 1, replayed: 0 });
    expect((await kept()).map((r) => r.id).sort()).toEqual([lost.id, other.id].sort());
    expect(await maintenance.getJobState(lost.id)).toBe("unknown");

    // That scan ends (its request with it): the lost one is queued again under its id, as it was asked.
    await other.job.remove();
    await h.runtime.db.query("DELETE FROM job_requests WHERE id = $1", [other.id]);
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 0, missing: 0, replayed: 1 });
    expect((await maintenance.getJob(lost.id))?.data).toEqual({ prefix: "in/", restart: true });

    // The same work under another job (the same scan submitted anew) still carries a lost one.
    await (await maintenance.getJob(lost.id))!.remove();
    expect(await replayLostRequests(deps, h.log, { ...afterLoss, missingMs: 100 })).toEqual({ ended: 0, missing: 1, replayed: 0 });
    const same = await jobs.submit("inventory-scan", { restart: true, prefix: "in/" });
    await new Promise((r) => setTimeout(r, 200));
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 1, missing: 0, replayed: 0 });
    expect((await kept()).map((r) => r.id)).toEqual([same.id]);
  });

  it("a request queued again gets only the attempts it has left; one that used them all is forgotten", async () => {
    // Found by review: the replayed job started BullMQ's count over, so a request Redis lost
    // while it backed off got a fresh set of attempts (JOB_ATTEMPTS 6: up to 11 tries).
    const jobs = h.runtime.deps.jobs;
    const attempts = jobs.prepareJob("inventory-scan", {}).opts.attempts!;
    expect(attempts).toBeGreaterThanOrEqual(3);
    // Another scan holds the inventory lock: each attempt fails (lock-contention) and is retried.
    const release = (await tryInventoryLock(h.runtime.db))!;
    try {
      const runner = await h.startRunner({ queues: ["maintenance"] });
      const { id, job } = await jobs.submit("inventory-scan", { prefix: "in/" });
      const made = async () => (await h.runtime.db.query<{ attempts_made: number }>("SELECT attempts_made FROM job_requests WHERE id = $1", [id])).rows[0]?.attempts_made ?? 0;
      const deadline = Date.now() + 20_000;
      while ((await made()) < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      await runner.stop(1_000);
      const used = (await jobs.queue("maintenance").getJob(id))!.attemptsMade;
      expect(used).toBeGreaterThanOrEqual(2);
      expect(used).toBeLessThan(attempts);
      await new Promise((r) => setTimeout(r, 200)); // the last failure's count written
      expect(await made()).toBe(used);

      await job.remove();
      const deps = { db: h.runtime.db, jobs };
      await replayLostRequests(deps, h.log, { ...afterLoss, missingMs: 100 });
      await new Promise((r) => setTimeout(r, 200));
      expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 0, missing: 0, replayed: 1 });
      const again = (await jobs.queue("maintenance").getJob(id))!;
      expect([again.opts.attempts, again.attemptsMade]).toEqual([attempts - used, 0]);

      // The new job's failures add to the count; lost again once none is left, it is not queued again.
      const second = await h.startRunner({ queues: ["maintenance"] });
      const state = await (async () => {
        const until = Date.now() + 20_000;
        for (;;) {
          const s = await jobs.queue("maintenance").getJobState(id);
          if (s === "failed" || Date.now() > until) return s;
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      expect(state).toBe("failed");
      await second.stop(1_000);
      await new Promise((r) => setTimeout(r, 200));
      expect(await made()).toBe(attempts);
      // Redis loses the failed job before the history or a pass saw it end.
      await h.runtime.db.query("DELETE FROM operations WHERE id = $1", [id]);
      await (await jobs.queue("maintenance").getJob(id))!.remove();
      await replayLostRequests(deps, h.log, { ...afterLoss, missingMs: 100 });
      await new Promise((r) => setTimeout(r, 200));
      expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 1, missing: 0, replayed: 0 });
      expect(await kept()).toEqual([]);
      expect(await jobs.queue("maintenance").getJobState(id)).toBe("unknown");
    } finally {
      await release();
    }
  }, 60_000);

  it("a replayed job's attempt that fails while the pass is still queueing others adds to the attempts used, not replaces them", async () => {
    // Found by review: the pass set attempts_before = attempts_made only after queueing every
    // lost request, so the new job's first failure, written before that (its count on top of
    // the old attempts_before), became the "attempts before" and the old job's count was lost:
    // a later replay got attempts already spent. Workers run while the pass does (the recovery
    // watch runs in the worker); here another request's history write is held by a row lock,
    // as a slow database would, so that the replayed scan fails once in between.
    const jobs = h.runtime.deps.jobs;
    const attempts = jobs.prepareJob("inventory-scan", {}).opts.attempts!;
    const release = (await tryInventoryLock(h.runtime.db))!; // each scan attempt fails (lock-contention)
    const holder = await h.runtime.db.connect();
    try {
      const runner = await h.startRunner({ queues: ["maintenance"] });
      const { id, job } = await jobs.submit("inventory-scan", { prefix: "in/" });
      const made = async () => (await h.runtime.db.query<{ attempts_made: number }>("SELECT attempts_made FROM job_requests WHERE id = $1", [id])).rows[0]?.attempts_made ?? 0;
      const until = async (done: () => Promise<boolean>) => {
        const deadline = Date.now() + 20_000;
        while (!(await done()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      };
      await until(async () => (await made()) >= 2);
      await runner.stop(1_000);
      const used = (await jobs.queue("maintenance").getJob(id))!.attemptsMade;
      expect(used).toBeGreaterThanOrEqual(2);
      expect(used).toBeLessThan(attempts);
      await new Promise((r) => setTimeout(r, 200));
      expect(await made()).toBe(used);
      const other = await submit("other"); // lost too, queued after the scan by the same pass
      await job.remove();
      await (await queue().getJob(other))!.remove();
      const deps = { db: h.runtime.db, jobs };
      await replayLostRequests(deps, h.log, { ...afterLoss, missingMs: 100 });
      await new Promise((r) => setTimeout(r, 200));

      const second = await h.startRunner({ queues: ["maintenance"] });
      await holder.query("BEGIN");
      await holder.query("SELECT 1 FROM operations WHERE id = $1 FOR UPDATE", [other]);
      const pass = replayLostRequests(deps, h.log, { ...later, missingMs: 100 });
      // The replayed scan's first attempt fails while the pass waits on the other request.
      // (Its next comes after the 200 ms backoff: the pass ends before it.)
      await until(async () => (await jobs.queue("maintenance").getJob(id))?.attemptsMade === 1);
      await until(async () => (await made()) !== used); // its count written
      await holder.query("ROLLBACK");
      expect(await pass).toEqual({ ended: 0, missing: 0, replayed: 2 });

      await until(async () => (await jobs.queue("maintenance").getJobState(id)) === "failed");
      expect(await jobs.queue("maintenance").getJobState(id)).toBe("failed");
      await second.stop(1_000);
      await new Promise((r) => setTimeout(r, 200));
      expect(await made()).toBe(attempts);
    } finally {
      await holder.query("ROLLBACK").catch(() => undefined);
      holder.release();
      await release();
    }
  }, 60_000);

  it("a job that vanished with no loss of the whole of Redis (a partial loss) is queued again after the lock period, however old its request", async () => {
    // The known weakness: a job gone while the fleet epoch stayed was taken for a removal on
    // purpose, and its request forgotten after a minute; a failover to a replica that lacked the
    // last writes lost those requests for good. Every removal through Fleet forgets the request
    // itself now (cancel, withdrawal, the board's clean), so a missing job is a loss.
    const old = await submit("old");
    const young = await submit("young");
    await h.runtime.db.query("UPDATE job_requests SET created_at = now() - interval '1 hour' WHERE id = $1", [old]);
    await (await queue().getJob(old))!.remove();
    await (await queue().getJob(young))!.remove();
    const deps = { db: h.runtime.db, jobs: h.runtime.deps.jobs };
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 0, missing: 2, replayed: 0 });
    expect(await kept()).toEqual(expect.arrayContaining([{ id: old, replays: 0, missing: true }, { id: young, replays: 0, missing: true }]));
    await new Promise((r) => setTimeout(r, 200));
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 0, missing: 0, replayed: 2 });
    for (const id of [old, young]) expect(await queue().getJobState(id)).toBe("waiting");
    const log = await h.runtime.db.query<{ message: string }>("SELECT message FROM migration_log WHERE subject = $1", [`operation:${old}`]);
    expect(log.rows).toEqual([{ message: expect.stringMatching(/Redis lost its job \(missing for \d+ s\); queued again under its id$/) }]);
  });

  it("a cancelled request is forgotten by the cancel itself, never queued again when its history write fails", async () => {
    // Found by review: the cancel removed the job and left the kept request; only the history's
    // REMOVED (written after, best effort: "operation history not written") told the recovery
    // pass it had ended. Without it, a lock period later the cancelled command was queued again.
    const cancelled = await submit("cancelled");
    const found = await findOperation([queue()], cancelled);
    expect(await cancelOperation(h.runtime.redis, h.runtime.prefix, found!, h.runtime.deps.jobs.contractOf("remote-command"), h.runtime.deps.jobs)).toEqual({ kind: "removed", was: "waiting" });
    // The history's REMOVED is not written (the database refused it a moment).
    expect(await kept()).toEqual([]);
    const deps = { db: h.runtime.db, jobs: h.runtime.deps.jobs };
    await replayLostRequests(deps, h.log, { ...afterLoss, missingMs: 100 });
    await new Promise((r) => setTimeout(r, 200));
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 0, missing: 0, replayed: 0 });
    expect(await queue().getJobState(cancelled)).toBe("unknown");
  });

  it("keeps a request kept before a replay (or a resubmission under its id) whose add Redis refuses", async () => {
    // Found by review: the failed add forgot every id it had asked to keep, the ones already
    // kept too. A replay (recovery pass) whose add fails — Redis gone again, or failed over to
    // a replica that refuses writes — deleted the only copy of a request Redis had lost.
    const lost = await submit("lost");
    await (await queue().getJob(lost))!.remove();
    // The replay's producer loses its connection to Redis between the pass's look and its add.
    const connection = new Redis(testRedisUrl(), { maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
    connection.on("error", () => undefined);
    const producer = new JobClient<FleetJobs>(fleetContracts(), connection, h.runtime.prefix, { attempts: 1, keepCompletedSeconds: 60, keepFailedSeconds: 60 }, { durableRequests: jobRequestStore(h.runtime.db) });
    await producer.queue("remote").waitUntilReady();
    connection.disconnect();
    await expect(producer.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "lost" } }, { jobId: lost })).rejects.toThrow();
    expect(await kept()).toEqual([{ id: lost, replays: 0, missing: false }]);
    await producer.close().catch(() => undefined);
  }, 30_000);

  it("a note that an earlier request under the same id ended does not end a request kept after it (lost work)", async () => {
    // Found by review: the pass forgot any kept request whose job was gone and whose id had a
    // note (core/endedRequests.ts), whenever the note was written. A note outlives its request
    // when the board cleans the completed job (the clean takes the request, not the note) and
    // stays for an hour, or for good while its queue has no other request kept; a submission
    // deduplicated by the same id, queued after it and then lost by Redis, was forgotten.
    const id = "r2-same-id";
    const first = await h.runtime.deps.jobs.submit("remote-command", { server: "nas1", command: "export", values: { project: "first" } }, { jobId: id });
    expect(first.id).toBe(id);
    // Its run succeeds while PostgreSQL cannot forget it: the worker notes it ended. Then the
    // board cleans the completed job: the request is taken, the job removed.
    await noteRequestsEnded(queue(), [id]);
    expect((await takeJobRequests(h.runtime.db, "remote", { ids: [id] })).map((t) => t.id)).toEqual([id]);
    await (await queue().getJob(id))!.remove();
    await new Promise((r) => setTimeout(r, 50));
    // Submitted again under its id, and lost by Redis before it ran.
    await h.runtime.deps.jobs.submit("remote-command", { server: "nas1", command: "export", values: { project: "second" } }, { jobId: id });
    await (await queue().getJob(id))!.remove();
    const deps = { db: h.runtime.db, jobs: h.runtime.deps.jobs };
    expect(await replayLostRequests(deps, h.log, { ...afterLoss, missingMs: 100 })).toEqual({ ended: 0, missing: 1, replayed: 0 });
    await new Promise((r) => setTimeout(r, 200));
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 0, missing: 0, replayed: 1 });
    expect((await queue().getJob(id))?.data).toEqual({ server: "nas1", command: "export", values: { project: "second" } });
  });

  it("a pass between a board retry's keep and BullMQ's move of the job does not forget the request kept again", async () => {
    // Found by review: the board keeps the request of a completed job it retries (WAITING in the
    // history), then bull-board moves the job back to wait. A pass in between saw the job still
    // completed in BullMQ, took the request for ended and forgot it, as kept: the retried job
    // then ran with no request, lost for good if Redis lost it before it ran.
    const id = await submit("retried");
    const connection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    const worker = new Worker("remote", null, { connection, prefix: queue().opts.prefix });
    try {
      const taken = await worker.getNextJob("t1");
      expect(taken?.id).toBe(id);
      await taken!.moveToCompleted("done", "t1", false);
    } finally {
      await worker.close();
      connection.disconnect();
    }
    const job = (await queue().getJob(id))!;
    expect(await job.getState()).toBe("completed");
    // The board's retry, step by step: the request kept again, then (after the pass) the move.
    await keepRequestsRunAgain(h.runtime.db, [{ id, name: job.name, queue: "remote", data: job.data, runAt: null, priority: null, createdAt: job.timestamp }]);
    const deps = { db: h.runtime.db, jobs: h.runtime.deps.jobs };
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 0, missing: 0, replayed: 0 });
    await job.retry("completed");
    expect(await kept()).toEqual([{ id, replays: 0, missing: false }]);
    // Lost by Redis before it ran: queued again, as any lost request.
    await (await queue().getJob(id))!.remove();
    await replayLostRequests(deps, h.log, { ...afterLoss, missingMs: 100 });
    await new Promise((r) => setTimeout(r, 200));
    expect(await replayLostRequests(deps, h.log, { ...later, missingMs: 100 })).toEqual({ ended: 0, missing: 0, replayed: 1 });
  });

  it("forgets a kept request whose job Redis refused", async () => {
    // BullMQ refuses a custom id with ':' once the request is kept: the caller is told it
    // failed, and nothing is left to be queued later behind its back.
    await expect(h.runtime.deps.jobs.submit("remote-command", { server: "nas1", command: "export", values: {} }, { jobId: "bad:id" })).rejects.toThrow();
    expect(await kept()).toEqual([]);
  });
});
