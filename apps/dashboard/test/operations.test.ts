import { Worker } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { buildCatalogue } from "@fleet/core/catalogue";
import { RetryableError } from "@fleet/core/errors";
import type { AnyJobDefinition } from "@fleet/core/jobDefinition";
import { JobRunner } from "@fleet/core/jobRunner";
import { createLogger } from "@fleet/core/logger";
import { createMetrics } from "@fleet/core/metrics";
import { createDashboardFixture, login, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

describe("operations API", () => {
  let fx: DashboardFixture;
  let base: string;
  let auth: Record<string, string>;

  const submit = (body: unknown, headers: Record<string, string> = auth) =>
    send(base, "/api/operations", { method: "POST", headers: { ...headers, "content-type": "application/json" }, body: JSON.stringify(body) });
  const waiting = async () => {
    const counts = await Promise.all(["migration", "maintenance"].map((q) => fx.dashboard.jobs.queue(q).getJobCounts("waiting", "delayed", "prioritized")));
    return counts.reduce((s, c) => s + Object.values(c).reduce((a, b) => a + b, 0), 0);
  };

  beforeAll(async () => {
    fx = await createDashboardFixture("operations");
    base = fx.dashboard.url;
    auth = { authorization: `Bearer ${fx.apiToken}` };
  });
  afterAll(() => fx?.close());

  it("needs a bearer token: none, a wrong one, basic auth or a session cookie get 401", async () => {
    expect((await submit({ name: "seed-ranges" }, {})).status).toBe(401);
    expect((await submit({ name: "seed-ranges" }, { authorization: `Bearer ${"0".repeat(48)}` })).status).toBe(401);
    expect((await submit({ name: "seed-ranges" }, { authorization: `Basic ${Buffer.from("alice:alice-operator-pw-Ϡ").toString("base64")}` })).status).toBe(401);
    const { jar } = await login(base, "alice", "alice-operator-pw-Ϡ");
    expect((await send(base, "/api/operations", { jar })).status).toBe(401);
    expect(await waiting()).toBe(0);
  });

  it("submits a catalogue job, shows it, lists it by state and cancels it while it waits (not a range's job: the fleet re-creates those)", async () => {
    const res = await submit({ name: "migrate-range", data: { rangeId: 5 }, opts: { priority: 3 } });
    expect(res.status).toBe(202);
    const op = (await res.json()) as { id: string; state: string; queue: string };
    expect(op).toMatchObject({ name: "migrate-range", queue: "migration", state: "prioritized", attempts: 0 });

    const shown = await send(base, `/api/operations/${encodeURIComponent(op.id)}`, { headers: auth });
    expect(shown.status).toBe(200);
    expect(await shown.json()).toMatchObject({ id: op.id, data: { rangeId: 5 }, result: null, error: null, log: [] });

    const listed = (await (await send(base, "/api/operations?state=prioritized", { headers: auth })).json()) as { operations: Array<{ id: string }> };
    expect(listed.operations.map((o) => o.id)).toEqual([op.id]);
    const none = (await (await send(base, "/api/operations?state=failed", { headers: auth })).json()) as { operations: unknown[] };
    expect(none.operations).toEqual([]);

    // A range's job is re-created by the fleet while the range has files left: refused, with
    // what to do instead (found by review: a cancelled range was back within seconds).
    const refused = await send(base, `/api/operations/${encodeURIComponent(op.id)}/cancel`, { method: "POST", headers: auth });
    expect(refused.status).toBe(409);
    expect(await refused.json()).toEqual({ error: expect.stringMatching(/^not cancelled: a range's job is re-created by the fleet .*fleet pause migration/), state: "prioritized" });
    await (await fx.dashboard.jobs.queue("migration").getJob(op.id))!.remove();

    const retry = (await (await submit({ name: "retry-failed", data: { requestedOnly: true }, opts: { priority: 3 } })).json()) as { id: string };
    const cancel = await send(base, `/api/operations/${encodeURIComponent(retry.id)}/cancel`, { method: "POST", headers: auth });
    expect(await cancel.json()).toEqual({ id: retry.id, cancelled: true, was: "prioritized" });
    expect(await waiting()).toBe(0);
    // BullMQ has forgotten it; the Postgres history has not.
    const gone = await send(base, `/api/operations/${encodeURIComponent(retry.id)}`, { headers: auth });
    expect(gone.status).toBe(200);
    const past = (await gone.json()) as { log: string[] };
    expect(past).toMatchObject({ id: retry.id, name: "retry-failed", queue: "migration", state: "removed", source: "history", finishedAt: expect.any(String) });
    expect(past.log).toEqual([expect.stringMatching(/ waiting: submitted by \S+$/), expect.stringMatching(/ removed: cancelled by \S+ before it started$/)]);
    const listedPast = (await (await send(base, "/api/operations", { headers: auth })).json()) as { operations: Array<{ id: string; state: string }> };
    expect(listedPast.operations.find((o) => o.id === retry.id)).toMatchObject({ state: "removed" });
    expect((await send(base, `/api/operations/${encodeURIComponent(retry.id)}/cancel`, { method: "POST", headers: auth })).status).toBe(409);
  });

  it("unknown job names and invalid data: 400 with the issues, nothing enqueued", async () => {
    const unknown = await submit({ name: "format-disk", data: {} });
    expect(unknown.status).toBe(400);
    expect(await unknown.json()).toMatchObject({ error: 'unknown job "format-disk"', known: expect.arrayContaining(["migrate-range", "seed-ranges"]) });

    const bad = await submit({ name: "migrate-range", data: { rangeId: "five", extra: 1 } });
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { error: string; issues: Array<{ path: string; message: string }> };
    expect(body.error).toBe('invalid data for job "migrate-range"');
    expect(body.issues.map((i) => i.path)).toEqual(expect.arrayContaining(["rangeId"]));

    for (const wrong of [{ data: {} }, { name: "seed-ranges", unexpected: true }, { name: "seed-ranges", opts: { attempts: 100 } }, { name: "seed-ranges", opts: { jobId: "../x y" } }, [1, 2]]) {
      const res = await submit(wrong);
      expect([JSON.stringify(wrong), res.status]).toEqual([JSON.stringify(wrong), 400]);
      expect(((await res.json()) as { issues: unknown[] }).issues.length).toBeGreaterThan(0);
    }
    const query = await send(base, "/api/operations?state=sleeping", { headers: auth });
    expect(query.status).toBe(400);
    expect(await waiting()).toBe(0);
  });

  it("a running operation nobody listens for cannot be cancelled (409, left alone); finished ones neither; unknown ids are 404", async () => {
    await submit({ name: "migrate-range", data: { rangeId: 9 } });
    const connection = new Redis(fx.config.REDIS_URL, { maxRetriesPerRequest: null });
    const worker = new Worker("migration", null, { connection, prefix: `{${fx.prefix}}`, autorun: false });
    try {
      const job = (await worker.getNextJob("test-token"))!;
      expect(await job.getState()).toBe("active");
      const res = await send(base, `/api/operations/${encodeURIComponent(job.id!)}/cancel`, { method: "POST", headers: auth });
      expect(res.status).toBe(409);
      expect(await job.getState()).toBe("active");
      await job.moveToCompleted({ copied: 4 }, "test-token", false);
      const shown = (await (await send(base, `/api/operations/${encodeURIComponent(job.id!)}`, { headers: auth })).json()) as Record<string, unknown>;
      expect(shown).toMatchObject({ state: "completed", result: { copied: 4 } });
      const again = await send(base, `/api/operations/${encodeURIComponent(job.id!)}/cancel`, { method: "POST", headers: auth });
      expect([again.status, ((await again.json()) as { error: string }).error]).toEqual([409, "the operation has already completed"]);
    } finally {
      await worker.close();
      connection.disconnect();
    }
    expect((await send(base, "/api/operations/no-such-id/cancel", { method: "POST", headers: auth })).status).toBe(404);
    expect((await send(base, "/api/operations/no-such-id", { headers: auth })).status).toBe(404);
  });

  it("API lock: submissions get 423 with the reason while status and listing keep working; the progress page shows a banner", async () => {
    const lock = await send(base, "/api/lock", { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ reason: "upgrading <the> storage" }) });
    expect(lock.status).toBe(200);
    const refused = await submit({ name: "seed-ranges" });
    expect(refused.status).toBe(423);
    expect(await refused.json()).toMatchObject({ error: "the API is locked", reason: "upgrading <the> storage", lockedBy: "token:ci" });
    expect(await waiting()).toBe(0);
    expect((await send(base, "/api/operations", { headers: auth })).status).toBe(200);
    expect(await (await send(base, "/api/lock", { headers: auth })).json()).toMatchObject({ locked: { reason: "upgrading <the> storage", by: "token:ci" } });

    // Another replica sees the same lock: it lives in Redis.
    const replica = await fx.replica();
    expect((await send(replica.url, "/api/operations", { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: '{"name":"seed-ranges"}' })).status).toBe(423);

    const { jar } = await login(base, "victor", "victor-viewer-pw");
    const progress = await (await send(base, "/progress", { jar })).text();
    expect(progress).toContain("API locked");
    expect(progress).toContain("upgrading &lt;the&gt; storage");

    const unlock = await send(base, "/api/lock", { method: "DELETE", headers: auth });
    expect(await unlock.json()).toEqual({ locked: false, removed: true });
    expect((await submit({ name: "seed-ranges" })).status).toBe(202);
  });

  it("cancels a running operation through its worker's AbortSignal: the job fails as cancelled, without retry", async () => {
    // A real JobRunner on the fleet's prefix, with a retry-failed stand-in that runs until aborted.
    let sawAbort: unknown;
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const standIn: AnyJobDefinition<object> = {
      name: "retry-failed",
      queue: "migration",
      description: "waits for its signal",
      schema: z.object({ requestedOnly: z.boolean().optional() }),
      async handle(_payload, ctx) {
        started();
        await new Promise((_resolve, reject) =>
          ctx.signal.addEventListener("abort", () => {
            sawAbort = ctx.signal.reason;
            reject(new RetryableError("interrupted", "aborted"));
          }),
        );
      },
    };
    const connection = new Redis(fx.config.REDIS_URL, { maxRetriesPerRequest: null });
    const runner = new JobRunner<object>({
      catalogue: buildCatalogue({ declaredNames: ["retry-failed"], queues: ["migration"], definitions: { "retry-failed": standIn } }),
      consumers: [{ queue: "migration", concurrency: 1 }],
      connection,
      prefix: `{${fx.prefix}}`,
      deps: {},
      log: createLogger({ LOG_LEVEL: "silent", LOG_FORMAT: "json", name: "runner" }),
      metrics: createMetrics({ defaultMetrics: false }),
      windows: new Map(),
      backoff: { scheduleMs: [1_000], jitter: 0 },
      stalledIntervalMs: 30_000,
      maxStalledCount: 1,
      lockDurationMs: 30_000,
    });
    try {
      await runner.start();
      const op = (await (await submit({ name: "retry-failed", data: { requestedOnly: true } })).json()) as { id: string };
      await running;
      const res = await send(base, `/api/operations/${encodeURIComponent(op.id)}/cancel`, { method: "POST", headers: auth });
      expect([res.status, await res.json()]).toEqual([202, { id: op.id, cancelRequested: true, was: "active" }]);
      let shown: Record<string, unknown> = {};
      for (let i = 0; i < 100 && shown.state !== "failed"; i++) {
        await new Promise((r) => setTimeout(r, 50));
        shown = (await (await send(base, `/api/operations/${encodeURIComponent(op.id)}`, { headers: auth })).json()) as Record<string, unknown>;
      }
      expect(sawAbort).toBe("cancelled");
      expect(shown).toMatchObject({ state: "failed", attempts: 1, error: "cancelled: cancelled on request" });
    } finally {
      await runner.stop(1_000);
      connection.disconnect();
    }
  });
});
