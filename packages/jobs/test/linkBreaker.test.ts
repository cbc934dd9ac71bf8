import { createHash } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { RETRYABLE_CATEGORIES } from "@fleet/core/errors";
import { LinkBreakers } from "@fleet/core/linkBreakers";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { createPipelineHarness, fileSummary, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * retry-failed and packaged transfers honour the link breaker: while the destination refuses
 * as a whole (its root is a plain file here, so every write fails ENOTDIR), nothing fails for
 * good, retry-failed waits without spending attempts or retries, and everything lands once the
 * destination is a folder again.
 */

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const BREAKER = { BREAKER_THRESHOLD: "3", BREAKER_PROBE_SCHEDULE: "300ms,600ms", VERIFY: "write" };

async function breakDestination(h: PipelineHarness): Promise<void> {
  await rm(h.destDir, { recursive: true, force: true });
  await writeFile(h.destDir, "not a folder");
}

async function repairDestination(h: PipelineHarness): Promise<void> {
  await rm(h.destDir, { force: true });
  await mkdir(h.destDir);
}

async function permanent(h: PipelineHarness): Promise<unknown[]> {
  const { rows } = await h.runtime.db.query("SELECT file_id, error_category FROM migration_files WHERE status = 'FAIL' AND NOT (error_category = ANY($1::text[]))", [RETRYABLE_CATEGORIES]);
  return rows;
}

async function expectAllAtDestination(h: PipelineHarness, files: readonly SeededFile[]): Promise<void> {
  for (const f of files) expect(sha(await readFile(join(h.destDir, f.key)))).toBe(f.sha256);
}

describe("retry-failed while the link's breaker is open", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("waits (delayed, no attempt used, no retry spent) and retries once the link works", async () => {
    h = await createPipelineHarness("breaker-retry", { ...BREAKER, COPY_CONCURRENCY: "2" });
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 12 });
    // Files that failed earlier for the link (a retryable category), due for retry-failed.
    await h.runtime.db.query(
      `INSERT INTO migration_files (file_id, old_uri, file_name, status, error_category, error_message, retry_count, last_attempt_date)
       SELECT id, 'file:///x/' || uri, name, 'FAIL', 'network', 'connection reset', 0, now() - interval '1 hour' FROM source_files`,
    );
    await breakDestination(h);
    await h.startRunner();
    const retry = await h.runtime.deps.jobs.enqueue("retry-failed", {});
    const queue = h.runtime.deps.jobs.queue("migration");
    const breakers = new LinkBreakers(h.runtime.redis, h.runtime.prefix);
    const link = h.runtime.deps.link.link;
    // Its copies meet the refusing destination: a burst of link faults opens the breaker,
    // and the job waits for the probe instead of failing files or spending their retries.
    await waitFor(() => breakers.get(link), 20_000, "the breaker to open");
    await waitFor(async () => (await queue.getJobState(retry.id!)) === "delayed" || undefined, 10_000, "retry-failed to be delayed by the breaker");
    expect((await queue.getJob(retry.id!))!.attemptsMade).toBe(0);
    const during = await h.runtime.db.query<{ status: string; retry_count: number; error_category: string }>("SELECT status, retry_count, error_category FROM migration_files");
    expect(during.rows.filter((r) => !(r.status === "FAIL" && r.retry_count === 0))).toEqual([]);
    expect(await permanent(h)).toEqual([]);

    await repairDestination(h);
    await waitFor(async () => ((await fileSummary(h.runtime)).SUCCESS === files.length) || undefined, 60_000, "every file retried once the destination is a folder again");
    await expectAllAtDestination(h, files);
    expect(await breakers.get(link)).toBeNull();
    // One retry each: the successful one.
    const counts = await h.runtime.db.query<{ retry_count: number }>("SELECT DISTINCT retry_count FROM migration_files");
    expect(counts.rows).toEqual([{ retry_count: 1 }]);
  }, 120_000);
});

describe("per-object copies while the destination refuses", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("opens the breaker, leaves every file pending (also the ones whose faults opened it), and copies everything afterwards", async () => {
    h = await createPipelineHarness("breaker-objects", { ...BREAKER, BATCH_SIZE: "40", COPY_CONCURRENCY: "2" });
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 40 });
    await breakDestination(h);
    await h.startRunner();
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    const breakers = new LinkBreakers(h.runtime.redis, h.runtime.prefix);
    await waitFor(() => breakers.get(h.runtime.deps.link.link), 20_000, "the breaker to open");
    await new Promise((r) => setTimeout(r, 1_000));
    // The faults that opened the breaker were the link's, not their files': no FAIL rows (they
    // used to be recorded FAIL, and the range's job ended failed, until a retry ran).
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: 0, FAIL: 0, RETRYING: 0, withoutOutcome: 40 });

    await repairDestination(h);
    await waitFor(async () => (await fileSummary(h.runtime)).SUCCESS === files.length || undefined, 60_000, "every file copied");
    await expectAllAtDestination(h, files);
    const { rows } = await h.runtime.db.query<{ n: number }>("SELECT count(*)::int AS n FROM migration_file_attempts");
    expect(rows[0]!.n).toBe(0);
  }, 120_000);
});

describe("packaged transfers while the destination refuses", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("opens the breaker on the first failed package, fails no file, and ships everything afterwards", async () => {
    h = await createPipelineHarness("breaker-packaged", { ...BREAKER, TRANSFER_MODE: "packaged", BATCH_SIZE: "40", PACKAGE_MAX_FILES: "10" });
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 40 });
    await breakDestination(h);
    await h.startRunner();
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    const breakers = new LinkBreakers(h.runtime.redis, h.runtime.prefix);
    const open = await waitFor(() => breakers.get(h.runtime.deps.link.link), 20_000, "the breaker to open");
    expect(open.category).toBe("storage-unavailable");
    await new Promise((r) => setTimeout(r, 1_000));
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: 0, FAIL: 0, RETRYING: 0, withoutOutcome: 40 });

    await repairDestination(h);
    await waitFor(async () => (await fileSummary(h.runtime)).SUCCESS === files.length || undefined, 60_000, "every file shipped");
    const { rows } = await h.runtime.db.query<{ new_uri: string }>("SELECT new_uri FROM migration_files LIMIT 1");
    expect(rows[0]!.new_uri).toContain(".fleet-packages/");
  }, 120_000);
});
