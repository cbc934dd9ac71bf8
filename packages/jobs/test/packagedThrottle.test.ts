import { createPipelineHarness, fileSummary, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/** TRANSFER_MODE=packaged obeys the link's bandwidth limit: its tar streams are paced too. */
describe("packaged transfers under a link bandwidth limit", () => {
  let h: PipelineHarness;
  const MiB = 1024 * 1024;

  beforeAll(async () => {
    h = await createPipelineHarness("packthrottle", {
      SOURCE_URL: `null:zero?size=${MiB}`,
      TRANSFER_MODE: "packaged",
      PACKAGE_MAX_BYTES: String(8 * MiB),
      BATCH_SIZE: "24",
      VERIFY: "write",
      LINK_BWLIMIT: "2M",
    });
  });
  afterAll(() => h?.close());

  it("24 MiB in three packages at 2 MiB/s take at least the time the limit allows", async () => {
    await h.runtime.db.query(`INSERT INTO source_files (uri, name, size) SELECT 'p/f-' || i || '.bin', 'f-' || i || '.bin', $1 FROM generate_series(1, 24) AS i`, [MiB]);
    await h.startRunner();
    const started = Date.now();
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    const summary = await waitFor(async () => {
      const s = await fileSummary(h.runtime);
      return s.withoutOutcome === 0 && s;
    }, 60_000, "every file to have an outcome");
    const seconds = (Date.now() - started) / 1000;
    process.stdout.write(`packaged under LINK_BWLIMIT=2M: 24 MiB in ${seconds.toFixed(1)} s\n`);
    expect(summary).toMatchObject({ withoutOutcome: 0 });
    expect((await h.runtime.db.query(`SELECT count(*)::int AS n FROM migration_files WHERE status = 'SUCCESS'`)).rows[0].n).toBe(24);
    // (24 MiB − the bucket's 4 MiB burst) / 2 MiB/s = 10 s at least; unthrottled it took 4 s on a loaded machine.
    expect(seconds).toBeGreaterThan(9);
  }, 90_000);
});
