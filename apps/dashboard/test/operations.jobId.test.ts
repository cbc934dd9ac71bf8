import { createPool } from "@fleet/db/pool";
import { QUEUES } from "@fleet/jobs/contracts";
import { createDashboardFixture, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

/**
 * `opts.jobId` of POST /api/operations: a client's id makes a submission idempotent, in a
 * namespace of its own (`api-<job>-<id>`). It used to override the contract's own id in
 * whatever queue the job lives, so a token allowed only `submit:unpack` could take the
 * deterministic id of another job kind in the migration queue (`range-<id>` of migrate-range),
 * delayed for a year: BullMQ then silently dropped the real migrate-range job (same id), and the
 * reconcilers saw a "delayed" job under that id and left it alone — the range never migrated.
 */
describe("opts.jobId", () => {
  let fx: DashboardFixture;
  const unpackToken = "u".repeat(40);
  const submit = (body: unknown) =>
    send(fx.dashboard.url, "/api/operations", {
      method: "POST",
      headers: { authorization: `Bearer ${unpackToken}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });

  beforeAll(async () => {
    fx = await createDashboardFixture("jobid-squat", { DASHBOARD_API_TOKENS: `narrow:submit:unpack+submit:hold:${unpackToken}` });
  });
  afterAll(() => fx?.close());

  it("a narrow token cannot take migrate-range's id range-7 (with any job of the migration queue)", async () => {
    // unpack derives its own id from its data: a client id is refused outright.
    const refused = await submit({ name: "unpack", data: { manifest: "x/p.manifest.json" }, opts: { jobId: "range-7", delayMs: 366 * 24 * 3_600_000 } });
    expect(refused.status).toBe(400);
    // hold takes one, in its own namespace.
    const res = await submit({ name: "hold", data: { duration: 60_000, reason: "squat" }, opts: { jobId: "range-7", delayMs: 366 * 24 * 3_600_000 } });
    expect(res.status).toBe(202);
    expect(((await res.json()) as { id: string }).id).toBe("api-hold-range-7");
    // What seed-ranges / reconcile do for range 7:
    await fx.dashboard.jobs.enqueue("migrate-range", { rangeId: 7 });
    const job = await fx.dashboard.jobs.queue(QUEUES.migration).getJob("range-7");
    expect(job?.name).toBe("migrate-range");
  });

  it("makes a submission idempotent: the same id twice is one operation", async () => {
    const body = { name: "hold", data: { duration: 60_000, reason: "nightly" }, opts: { jobId: "nightly-2026-12-05", delayMs: 3_600_000 } };
    const first = (await (await submit(body)).json()) as { id: string };
    const again = (await (await submit(body)).json()) as { id: string };
    expect([first.id, again.id]).toEqual(["api-hold-nightly-2026-12-05", "api-hold-nightly-2026-12-05"]);
  });

  it("gives jobs ids unique across queues: a cancel by id removes that job, not another queue's namesake", async () => {
    // BullMQ numbers jobs per queue: "3" used to name a job in each queue, and a cancel of the
    // maintenance queue's hold removed the migration queue's unpack (found by a security review).
    const unpack = (await (await submit({ name: "unpack", data: { manifest: "ids/a.manifest.json" }, opts: { delayMs: 3_600_000 } })).json()) as { id: string; queue: string };
    const hold = (await (await submit({ name: "hold", data: { duration: 60_000, reason: "ids" }, opts: { delayMs: 3_600_000 } })).json()) as { id: string; queue: string };
    expect([unpack.queue, hold.queue]).toEqual([QUEUES.migration, QUEUES.maintenance]);
    expect(unpack.id).not.toBe(hold.id);
    for (const id of [unpack.id, hold.id]) expect(id).toMatch(/^[0-9a-z]+-[0-9a-f]{10}$/);
    const cancel = await send(fx.dashboard.url, `/api/operations/${hold.id}/cancel`, { method: "POST", headers: { authorization: `Bearer ${unpackToken}` } });
    expect(cancel.status).toBe(200);
    expect(await fx.dashboard.jobs.queue(QUEUES.maintenance).getJob(hold.id)).toBeUndefined();
    expect((await fx.dashboard.jobs.queue(QUEUES.migration).getJob(unpack.id))?.name).toBe("unpack");
  });

  it("refuses to act on an id that names a job in two queues (jobs from before ids were unique)", async () => {
    // What BullMQ's per-queue numbers left behind: one id in two queues.
    const unpack = await fx.dashboard.jobs.queue(QUEUES.migration).add("unpack", { manifest: "old/a.manifest.json" }, { jobId: "legacy-1", delay: 3_600_000 });
    const hold = await fx.dashboard.jobs.queue(QUEUES.maintenance).add("hold", { duration: 60_000, reason: "old" }, { jobId: "legacy-1", delay: 3_600_000 });
    const auth = { authorization: `Bearer ${unpackToken}` };
    const shown = await send(fx.dashboard.url, "/api/operations/legacy-1", { headers: auth });
    const cancel = await send(fx.dashboard.url, "/api/operations/legacy-1/cancel", { method: "POST", headers: auth });
    for (const res of [shown, cancel]) {
      expect([res.status, await res.json()]).toEqual([409, { error: expect.stringMatching(/^operation legacy-1 names a job in each of the queues migration, maintenance/), queues: ["migration", "maintenance"] }]);
    }
    expect([await unpack.getState(), await hold.getState()]).toEqual(["delayed", "delayed"]);
    await unpack.remove();
    await hold.remove();
  });

  it("answers a duplicate submission with the queued job, and keeps the record of what was queued", async () => {
    const pg = createPool({ connectionString: fx.db.url, max: 1 });
    try {
      const manifest = "dupes/p.manifest.json";
      const first = (await (await submit({ name: "unpack", data: { manifest, target: "destination/restore", ifExists: "overwrite" }, opts: { delayMs: 3_600_000 } })).json()) as { id: string; deduplicated?: boolean };
      const again = (await (await submit({ name: "unpack", data: { manifest, target: "destination/restore" } })).json()) as { id: string; deduplicated?: boolean };
      expect([again.id, first.deduplicated, again.deduplicated]).toEqual([first.id, undefined, true]);
      const shown = (await (await send(fx.dashboard.url, `/api/operations/${first.id}`, { headers: { authorization: `Bearer ${unpackToken}` } })).json()) as { data: unknown };
      expect(shown.data).toEqual({ manifest, target: "destination/restore", ifExists: "overwrite" });
      const recorded = await pg.query(`SELECT data FROM operations WHERE id = $1`, [first.id]);
      expect(recorded.rows).toEqual([{ data: { manifest, target: "destination/restore", ifExists: "overwrite" } }]);
    } finally {
      await pg.end();
    }
  });

  it("refuses ids BullMQ cannot hold (':')", async () => {
    const res = await submit({ name: "hold", data: { duration: 60_000, reason: "x" }, opts: { jobId: "a:b" } });
    expect(res.status).toBe(400);
  });
});
