import { mkdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { tryInventoryLock } from "@fleet/db/sql/inventory";
import { nextPendingFiles } from "@fleet/db/sql/files";
import { migrationProgress } from "@fleet/db/sql/reports";
import { scanInventory } from "../src/inventory/scanInventory";
import type { ScanProgress } from "../src/inventory/scanInventory";
import { createPipelineHarness, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * The inventory scan over a real directory and database: a first scan fills source_files in
 * batches; a re-scan after adding, changing and deleting files reports exactly those, adds the
 * changed ones as new versions (new ids → new ranges → migrated again, replacing the old object)
 * and leaves every unchanged row untouched; a scan stopped midway resumes from its cursor.
 */
const FILES = 120;
const key = (i: number) => `d${i % 4}/sub${i % 3}/f-${String(i).padStart(4, "0")}.bin`;

describe("inventory scan", () => {
  let h: PipelineHarness;

  beforeAll(async () => {
    h = await createPipelineHarness("inventory-scan", { BATCH_SIZE: "50" });
    for (let i = 0; i < FILES; i++) await put(key(i), `file ${i}`);
  });
  afterAll(() => h.close());

  async function put(k: string, body: string, mtime?: Date): Promise<void> {
    const path = join(h.sourceDir, k);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, body);
    if (mtime) await utimes(path, mtime, mtime);
  }
  const scan = (more: Partial<Parameters<typeof scanInventory>[0]> = {}) => scanInventory({ db: h.runtime.db, source: h.runtime.deps.source, log: h.log, batchSize: 25, ...more });
  const rowVersions = async () =>
    new Map((await h.runtime.db.query<{ id: number; v: string }>(`SELECT id, xmin::text AS v FROM source_files`)).rows.map((r) => [r.id, r.v]));

  it("first scan: every file once, in batches, with size and modification time", async () => {
    const seen: ScanProgress[] = [];
    const r = await scan({ onProgress: (p) => seen.push({ ...p }) });
    expect(r).toMatchObject({ files: FILES, new: FILES, changed: 0, unchanged: 0, vanished: 0, resumed: false, unreadable: [] });
    expect(seen.map((p) => p.files)).toEqual([0, 25, 50, 75, 100, 120]);
    const { rows } = await h.runtime.db.query(`SELECT count(*)::int AS n, count(DISTINCT uri)::int AS keys, count(modified_at)::int AS mtimes, min(name) AS name FROM source_files`);
    expect(rows[0]).toEqual({ n: FILES, keys: FILES, mtimes: FILES, name: "f-0000.bin" });
    const state = await h.runtime.db.query(`SELECT cursor, last_success_at FROM sync_state WHERE key LIKE 'inventory-scan:%'`);
    expect(state.rows).toEqual([{ cursor: null, last_success_at: expect.any(Date) }]);
    // The log has the summary.
    expect((await h.runtime.db.query(`SELECT message FROM migration_log WHERE job = 'inventory-scan'`)).rows).toEqual([{ message: "inventory scan finished" }]);
  });

  it("re-scan after adding, changing and deleting a few files reports exactly those; unchanged rows are not written", async () => {
    // Migrate everything first (f-0007 will fail: it is made unreadable as a FAIL by hand).
    await h.startRunner();
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await waitFor(async () => (await migrationProgress(h.runtime.db, { maxRetries: 3, retryableCategories: [] })).files.SUCCESS === FILES, 30_000, "the first migration");
    const f7 = (await h.runtime.db.query(`SELECT id FROM source_files WHERE uri = $1`, [key(7)])).rows[0].id as number;
    await h.runtime.db.query(`UPDATE migration_files SET status = 'FAIL', error_category = 'io', error_message = 'flaky disk' WHERE file_id = $1`, [f7]);
    const before = await rowVersions();
    const maxId = Math.max(...before.keys());

    await put("new/one.txt", "new 1");
    await put("new/two.txt", "new 2");
    await put(key(3), "changed content, longer"); // size changes
    await put(key(7), "file 7", new Date("2020-01-01T00:00:00Z")); // same size, older mtime
    await rm(join(h.sourceDir, key(5)));
    await rm(join(h.sourceDir, key(11)));

    const r = await scan();
    expect(r).toMatchObject({ files: FILES, new: 2, changed: 2, reappeared: 0, unchanged: FILES - 4, vanished: 2, vanishedKeys: [key(5), key(11)] });

    const after = await rowVersions();
    const { rows } = await h.runtime.db.query(`SELECT id, uri, superseded_by, vanished_at IS NOT NULL AS vanished FROM source_files ORDER BY id`);
    const byUri = (k: string) => rows.filter((x) => x.uri === k);
    // Changed: a new row (a new id after every old one) that the old row points to.
    for (const k of [key(3), key(7)]) {
      const [old, current] = byUri(k);
      expect(current!.id).toBeGreaterThan(maxId);
      expect(old!.superseded_by).toBe(current!.id);
      expect(current!.superseded_by).toBeNull();
    }
    expect(byUri(key(5))[0]!.vanished).toBe(true);
    expect(rows.filter((x) => x.id > maxId).map((x) => x.uri).sort()).toEqual([key(3), key(7), "new/one.txt", "new/two.txt"].sort());
    // Untouched: every row that did not change (the migrated ones among them) keeps its row version.
    const touched = new Set([...byUri(key(3)), ...byUri(key(7)), ...byUri(key(5)), ...byUri(key(11))].map((x) => x.id));
    for (const [id, version] of before) if (!touched.has(id)) expect([id, after.get(id)]).toEqual([id, version]);
    // The old version's failure no longer matters: killed as superseded; its success history stays.
    // In that order, not by id: the scan inserts two batches at a time, so ids need not follow the listing (f-0003 and f-0007 are in different batches).
    const oldIds = [byUri(key(3))[0]!.id, f7];
    const outcomes = await h.runtime.db.query(`SELECT file_id, status, error_message FROM migration_files WHERE file_id = ANY($1::int8[]) ORDER BY array_position($1::int8[], file_id)`, [oldIds]);
    expect(outcomes.rows.map((o) => [o.status, o.error_message?.replace(/\d+$/, "N") ?? null])).toEqual([
      ["SUCCESS", null],
      ["KILLED", "superseded: the file changed at the source; its new version is file N"],
    ]);
    // Progress counts the current inventory: the 2 vanished files were migrated, so they stay; old
    // versions do not (nor their outcomes: f-0003's success, f-0007's killed failure).
    const p = await migrationProgress(h.runtime.db, { maxRetries: 3, retryableCategories: [] });
    expect([p.sourceFiles, p.superseded, p.vanished, p.files.SUCCESS, p.files.KILLED, p.files.FAIL]).toEqual([FILES + 2, 2, 0, FILES - 2, 0, 0]);
  });

  it("the new versions get a range and are migrated again, replacing the old objects (IF_EXISTS=fail is for strangers, not for our own older version)", async () => {
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await waitFor(async () => (await migrationProgress(h.runtime.db, { maxRetries: 3, retryableCategories: [] })).files.SUCCESS === FILES + 2, 30_000, "the new versions to be migrated");
    expect(await readFile(join(h.destDir, key(3)), "utf8")).toBe("changed content, longer");
    expect(await readFile(join(h.destDir, "new/one.txt"), "utf8")).toBe("new 1");
    const failed = await h.runtime.db.query(`SELECT count(*)::int AS n FROM migration_files WHERE status = 'FAIL'`);
    expect(failed.rows[0].n).toBe(0);
  });

  it("old versions and vanished files are never copied by a range", async () => {
    await put("late/x.txt", "x");
    await put(key(20), "changed again!");
    await scan();
    const old = (await h.runtime.db.query(`SELECT id FROM source_files WHERE uri = $1 AND superseded_by IS NOT NULL`, [key(20)])).rows[0].id as number;
    await rm(join(h.sourceDir, "late/x.txt"));
    await scan();
    const gone = (await h.runtime.db.query(`SELECT id FROM source_files WHERE uri = 'late/x.txt'`)).rows[0].id as number;
    const page = await nextPendingFiles(h.runtime.db, 0, 1_000_000, 1_000);
    const pendingIds = page.files.map((f) => f.id);
    expect(pendingIds).not.toContain(old);
    expect(pendingIds).not.toContain(gone);
    expect(page.files.find((f) => f.uri === key(20))).toMatchObject({ replaces: true });
    const p = await migrationProgress(h.runtime.db, { maxRetries: 3, retryableCategories: [] });
    expect(p.vanished).toBe(1);
  });

  it("a scan stopped midway resumes after the last batch it wrote, with no file twice", async () => {
    for (let i = 0; i < 200; i++) await put(`resume/${String(i).padStart(3, "0")}.dat`, `r${i}`);
    const abort = new AbortController();
    await expect(
      scan({
        prefix: "resume/",
        batchSize: 40,
        signal: abort.signal,
        // At the first commit: with two writes in flight the listing runs further ahead than
        // it did with one, and a folder's last run of entries is listed without a check.
        onProgress: (p) => {
          if (p.files >= 40) abort.abort();
        },
      }),
    ).rejects.toMatchObject({ category: "interrupted" });
    const cursor = (await h.runtime.db.query(`SELECT cursor FROM sync_state WHERE key LIKE 'inventory-scan:%:resume/'`)).rows[0].cursor as string;
    expect(JSON.parse(cursor)).toMatchObject({ after: expect.stringMatching(/^resume\/\d{3}\.dat$/), counts: { files: expect.any(Number) } });
    const r = await scan({ prefix: "resume/", batchSize: 40 });
    expect(r.resumed).toBe(true);
    expect(r).toMatchObject({ files: 200, new: 200, vanished: 0 });
    const { rows } = await h.runtime.db.query(`SELECT count(*)::int AS n, count(DISTINCT uri)::int AS keys FROM source_files WHERE uri LIKE 'resume/%'`);
    expect(rows[0]).toEqual({ n: 200, keys: 200 });
  });

  it("the inventory-scan job (the opt-in schedule's) runs the same scan on SOURCE_URL", async () => {
    for (let i = 0; i < 7; i++) await put(`job/${i}.txt`, `j${i}`);
    const job = await h.runtime.deps.jobs.enqueue("inventory-scan", { prefix: "job/" });
    const done = await finishedJob(h.runtime, "maintenance", job.id!);
    expect(done.state).toBe("completed");
    expect(done.job.returnvalue).toMatchObject({ files: 7, new: 7, vanished: 0, prefix: "job/" });
    expect((await h.runtime.db.query(`SELECT count(*)::int AS n FROM source_files WHERE uri LIKE 'job/%'`)).rows[0].n).toBe(7);
  });

  it("the inventory-scan job takes allowEmpty, as the CLI takes --allow-empty: a prefix really emptied", async () => {
    await rm(join(h.sourceDir, "job"), { recursive: true });
    const job = await h.runtime.deps.jobs.enqueue("inventory-scan", { prefix: "job/", allowEmpty: true });
    const done = await finishedJob(h.runtime, "maintenance", job.id!);
    expect([done.state, done.job.failedReason]).toEqual(["completed", undefined]);
    expect(done.job.returnvalue).toMatchObject({ files: 0, vanished: 7, prefix: "job/" });
  });

  it("one inventory writer at a time", async () => {
    const release = await tryInventoryLock(h.runtime.db);
    try {
      await expect(scan()).rejects.toMatchObject({ category: "lock-contention" });
    } finally {
      await release!();
    }
    await expect(scan()).resolves.toMatchObject({ new: 0, changed: 0, vanished: 0 });
  });
});
