import { createHash } from "node:crypto";
import { appendFile, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { requestOperatorRetry } from "../src/migration/operatorRetry";
import { createPipelineHarness, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * The retry cap (RETRY_MAX) reached by real retries, not by a retry_count written in SQL: a
 * log file that an application keeps appending to fails every copy retryable `source-changed`
 * (the local adapter sees its size and mtime move while it is read), retry-failed runs until
 * the file has used RETRY_MAX retries, a further run leaves it alone, and once the writer
 * stops an operator's retry (what `fleet migrate retry --file` submits) copies its final content.
 *
 * Why the change always lands inside the read, on any machine: LINK_BWLIMIT paces the stream
 * (8 MiB/s, burst 4 MiB), so reading the 12 MiB file takes at least a second by the product's
 * own limit, while the writer appends a line every 20 ms.
 */

const MiB = 1024 * 1024;
const SIZE = 12 * MiB;
const RETRY_MAX = 2;
const KEY = "logs/app.log";
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("retry-failed's cap, reached by real retries", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("a file that keeps failing retryably is retried RETRY_MAX times, then left FAIL; an operator retry copies it once the cause is gone", async () => {
    h = await createPipelineHarness("retry-cap", { RETRY_MAX: String(RETRY_MAX), LINK_BWLIMIT: "8M", BATCH_SIZE: "10", VERIFY: "write" });
    const others = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 3 });
    const [log] = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 1, key: () => KEY, size: () => SIZE });
    const path = join(h.sourceDir, KEY);
    const db = h.runtime.db;
    const fileId = (await db.query<{ id: number }>("SELECT id FROM source_files WHERE uri = $1", [KEY])).rows[0]!.id;
    const outcome = async () =>
      (await db.query<{ status: string; error_category: string | null; retry_count: number; sha256: string | null; attempts: number }>(
        `SELECT m.status, m.error_category, m.retry_count, m.sha256, (SELECT count(*)::int FROM migration_file_attempts a WHERE a.file_id = m.file_id) AS attempts
           FROM migration_files m WHERE m.file_id = $1`,
        [fileId],
      )).rows[0];

    // The application writing the log: a line every 20 ms until the test stops it.
    let writing = true;
    let lines = 0;
    const writer = (async () => {
      while (writing) {
        await appendFile(path, `line ${++lines}\n`);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    try {
      await h.startRunner({ queues: ["migration", "maintenance"] });
      await h.runtime.deps.jobs.enqueue("seed-ranges", {});
      // The range's own copy fails: FAIL source-changed, no retry used yet.
      const first = await waitFor(async () => (await outcome()) ?? undefined, 30_000, "the log file's first outcome");
      expect(first).toMatchObject({ status: "FAIL", error_category: "source-changed", retry_count: 0, sha256: null, attempts: 1 });

      // Each retry-failed run retries it once (really copying, failing again), using one retry.
      for (let run = 1; run <= RETRY_MAX; run++) {
        const job = await h.runtime.deps.jobs.enqueue("retry-failed", {});
        const done = await finishedJob(h.runtime, "migration", job.id!, 30_000);
        expect([done.state, done.job.returnvalue]).toEqual(["completed", { batches: 1, retried: 1, succeeded: 0, failed: 1 }]);
        expect(await outcome()).toMatchObject({ status: "FAIL", error_category: "source-changed", retry_count: run, attempts: 1 + run });
      }
      const { rows: msg } = await db.query<{ error_message: string }>("SELECT error_message FROM migration_files WHERE file_id = $1", [fileId]);
      expect(msg[0]!.error_message).toMatch(/changed while it was read|bytes where the source announced/);

      // At the cap: a further run (the cause is still there) takes nothing; the file stays as it was.
      const capped = await h.runtime.deps.jobs.enqueue("retry-failed", {});
      const cappedDone = await finishedJob(h.runtime, "migration", capped.id!, 30_000);
      expect([cappedDone.state, cappedDone.job.returnvalue]).toEqual(["completed", { batches: 0, retried: 0, succeeded: 0, failed: 0 }]);
      expect(await outcome()).toMatchObject({ status: "FAIL", error_category: "source-changed", retry_count: RETRY_MAX, attempts: 1 + RETRY_MAX });
      // Nothing torn was published for it; the other files went through untouched.
      await expect(stat(join(h.destDir, KEY))).rejects.toMatchObject({ code: "ENOENT" });
      for (const f of others) expect(sha(await readFile(join(h.destDir, f.key)))).toBe(f.sha256);
    } finally {
      writing = false;
      await writer;
    }
    expect(lines).toBeGreaterThan(0);

    // The application stopped writing: an operator retries the file, past the cap.
    const finalSha = sha(await readFile(path));
    expect(finalSha).not.toBe(log!.sha256);
    const settings = h.runtime.deps.settings;
    const retry = await requestOperatorRetry({
      db,
      jobs: h.runtime.deps.jobs,
      selection: { fileIds: [fileId] },
      policy: { maxRetries: settings.maxRetries, retryableCategories: settings.retryableCategories },
      by: "test:operator",
    });
    expect(retry).toMatchObject({ files: 1, requested: { "source-changed": 1 }, notRetryable: [] });
    const done = await finishedJob(h.runtime, "migration", retry.jobId!, 30_000);
    expect([done.state, done.job.returnvalue]).toEqual(["completed", { batches: 1, retried: 1, succeeded: 1, failed: 0 }]);
    expect(await outcome()).toMatchObject({ status: "SUCCESS", error_category: null, retry_count: RETRY_MAX + 1, sha256: finalSha });
    expect(sha(await readFile(join(h.destDir, KEY)))).toBe(finalSha);
  }, 60_000);
});
