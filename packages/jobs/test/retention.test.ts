import { createPipelineHarness, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

describe("retention", () => {
  let h: PipelineHarness;
  beforeAll(async () => {
    h = await createPipelineHarness("retention", { OPERATIONS_KEEP_SUCCEEDED: "2h", OPERATIONS_KEEP_FAILED: "3d" });
  });
  afterAll(() => h.close());

  it("prunes the operation history by the configured periods, status rows included; the runner records its own run", async () => {
    const old = (hours: number) => `now() - make_interval(hours => ${hours})`;
    await h.runtime.db.query(
      `INSERT INTO operations (id, name, queue, state, created_at, finished_at) VALUES
         ('ok-3h', 'seed-ranges', 'maintenance', 'COMPLETED', ${old(4)}, ${old(3)}),
         ('ok-1h', 'seed-ranges', 'maintenance', 'COMPLETED', ${old(2)}, ${old(1)}),
         ('bad-4d', 'unpack', 'migration', 'FAILED', ${old(97)}, ${old(96)}),
         ('bad-2d', 'unpack', 'migration', 'FAILED', ${old(49)}, ${old(48)})`,
    );
    await h.runtime.db.query(`INSERT INTO operation_status (operation_id, kind, state) SELECT id, 'STATE', state FROM operations`);
    await h.startRunner({ queues: ["maintenance"] });
    const job = await h.runtime.deps.jobs.enqueue("retention", {});
    const maintenance = h.runtime.deps.jobs.queue("maintenance");
    const done = await waitFor(async () => {
      const j = await maintenance.getJob(job.id!);
      return j?.finishedOn ? j : undefined;
    }, 15_000, "retention to finish");
    expect(done.returnvalue).toMatchObject({ operations: 2, operationStatusRows: 2 });
    const left = await h.runtime.db.query<{ id: string; state: string }>(`SELECT id, state FROM operations ORDER BY id`);
    expect(left.rows.sort((a, b) => a.id.localeCompare(b.id))).toEqual(
      [
        { id: "bad-2d", state: "FAILED" },
        { id: job.id!, state: "COMPLETED" },
        { id: "ok-1h", state: "COMPLETED" },
      ].sort((a, b) => a.id.localeCompare(b.id)),
    );
    const statuses = await h.runtime.db.query<{ operation_id: string }>(`SELECT DISTINCT operation_id FROM operation_status ORDER BY operation_id`);
    expect(statuses.rows.map((r) => r.operation_id).sort()).toEqual(["bad-2d", job.id!, "ok-1h"].sort());
  });
});
