import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PermanentError } from "@fleet/core/errors";
import { seedRanges } from "@fleet/db/sql/ranges";
import { createStorage } from "@fleet/storage/createStorage";
import { parseManifest, serializeManifest } from "@fleet/storage/package/packageManifest";
import type { PackageManifest } from "@fleet/storage/package/packageManifest";
import type { Storage } from "@fleet/storage/storage";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { migrateRangeFiles } from "../src/migration/migrateRangeFiles";
import { unpackPackage } from "../src/migration/unpackPackage";
import type { UnpackInput } from "../src/migration/unpackPackage";
import { createPipelineHarness, fileSummary, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * TRANSFER_MODE=packaged end to end on real servers: ranges shipped as tar packages by real
 * runners, unpacked by the unpack job, every file compared byte for byte.
 */

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const LONG_KEY = `deep/${"a-very-long-directory-name-".repeat(4)}/and-a-long-file-name-${"x".repeat(60)}.dat`;

/** 120 files: odd and long names (pax headers), one streamed 3 MiB member, two missing. */
function seedOptions() {
  return {
    count: 120,
    size: (i: number) => (i === 11 ? 3 * 1024 * 1024 : i === 12 ? 0 : 300 + i * 17),
    key: (i: number) => (i === 3 ? "odd names/été ünïcode & #hash?.txt" : i === 5 ? LONG_KEY : `dir${i % 4}/file-${i}.bin`),
    missing: new Set([7, 90]),
  };
}

async function migrateAll(h: PipelineHarness): Promise<void> {
  await h.startRunner();
  await h.runtime.deps.jobs.enqueue("seed-ranges", {});
  await waitFor(async () => {
    const s = await fileSummary(h.runtime);
    return s.withoutOutcome === 0 && s;
  }, 60_000, "every file to have an outcome");
  await waitFor(async () => (await h.runtime.db.query(`SELECT 1 FROM migration_ranges WHERE status <> 'COMPLETE'`)).rowCount === 0 || undefined, 20_000, "ranges complete");
}

async function manifestKeys(storage: Storage): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of storage.list(".fleet-packages/")) if (o.key.endsWith(".manifest.json")) keys.push(o.key);
  return keys.sort();
}

async function unpackAll(h: PipelineHarness, keys: string[], target?: string): Promise<Array<Record<string, unknown>>> {
  const results = [];
  for (const manifest of keys) {
    const job = await h.runtime.deps.jobs.enqueue("unpack", { manifest, ...(target ? { target } : {}) });
    const done = await finishedJob(h.runtime, "migration", job.id!, 60_000);
    expect([done.state, done.job.failedReason]).toEqual(["completed", undefined]);
    results.push(done.job.returnvalue as Record<string, unknown>);
  }
  return results;
}

/** Checks every row: SUCCESS pointing into a package with the source's sha256, FAIL for the missing. */
async function expectRows(h: PipelineHarness, files: SeededFile[], tarUri: RegExp): Promise<void> {
  const { rows } = await h.runtime.db.query(`SELECT file_id, status, error_category, new_uri, sha256, size FROM migration_files ORDER BY file_id`);
  expect(rows).toHaveLength(files.length);
  for (const [i, f] of files.entries()) {
    const row = rows.find((r) => Number(r.file_id) === f.id)!;
    if (i === 7 || i === 90) {
      expect([row.status, row.error_category, row.new_uri]).toEqual(["FAIL", "not-found", null]);
      continue;
    }
    expect([row.status, row.sha256, Number(row.size)]).toEqual(["SUCCESS", f.sha256, f.size]);
    const encoded = f.key.split("/").map(encodeURIComponent).join("/");
    expect(row.new_uri).toMatch(tarUri);
    expect(row.new_uri.endsWith(`.tar#${encoded}`)).toBe(true);
  }
}

describe("packaged transfer, local → local", () => {
  let h: PipelineHarness;
  let files: SeededFile[];
  let restoreDir: string;

  beforeAll(async () => {
    restoreDir = await mkdtemp(join(tmpdir(), "fleet-restore-"));
    h = await createPipelineHarness("packaged-local", {
      // Payloads name targets; the folder is the operator's allow-list entry.
      TARGET_STORAGES: `restore=${restoreDir}`,
      TRANSFER_MODE: "packaged",
      BATCH_SIZE: "50",
      PACKAGE_MAX_FILES: "20",
      CHUNK_SIZE: "10",
      VERIFY: "readback",
    });
    files = await seedSourceFiles(h.runtime.db, h.sourceDir, seedOptions());
  });
  afterAll(async () => {
    await h.close();
    await rm(restoreDir, { recursive: true, force: true });
  });

  it("ships every range as packages (manifest + tar, no per-file objects); missing sources are FAIL", async () => {
    await migrateAll(h);
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: 118, FAIL: 2, RETRYING: 0, withoutOutcome: 0 });
    await expectRows(h, files, /^file:\/\/.*\/\.fleet-packages\/range-\d+\/part-\d+-\d+\.tar#/);
    // Nothing but packages in the destination.
    const keys: string[] = [];
    for await (const o of h.runtime.deps.destination.list("")) keys.push(o.key);
    expect(keys.every((k) => k.startsWith(".fleet-packages/"))).toBe(true);
    // 3 ranges (50, 50, 20 files), cut at 20 files: 3 + 3 + 1 packages.
    const manifests = await manifestKeys(h.runtime.deps.destination);
    expect(manifests).toHaveLength(7);
    const first = parseManifest(await h.runtime.deps.destination.readBuffer(manifests[0]!), manifests[0]!);
    expect(first.members[0]).toEqual({ path: files[0]!.key, size: files[0]!.size, sha256: files[0]!.sha256, fileId: files[0]!.id });
    const tar = await readFile(join(h.destDir, first.tar.key));
    expect([tar.length, sha(tar)]).toEqual([first.tar.size, first.tar.sha256]);
  });

  it("unpacks every package into another directory, every file byte for byte; a second unpack changes nothing", async () => {
    const manifests = await manifestKeys(h.runtime.deps.destination);
    const results = await unpackAll(h, manifests, "restore");
    expect(results.reduce((n, r) => n + (r.restored as number), 0)).toBe(118);
    for (const [i, f] of files.entries()) {
      if (i === 7 || i === 90) continue;
      expect(sha(await readFile(join(restoreDir, f.key)))).toBe(f.sha256);
    }
    const mtimeBefore = (await stat(join(restoreDir, files[0]!.key))).mtimeMs;
    const again = await unpackAll(h, manifests, "restore");
    expect(again.reduce((n, r) => n + (r.unchanged as number), 0)).toBe(118);
    expect(again.reduce((n, r) => n + (r.restored as number), 0)).toBe(0);
    expect((await stat(join(restoreDir, files[0]!.key))).mtimeMs).toBe(mtimeBefore);
    const log = await h.runtime.db.query(`SELECT level, subject, message FROM migration_log WHERE job = 'unpack' ORDER BY id LIMIT 1`);
    expect(log.rows[0]).toEqual({ level: "info", subject: `package:${manifests[0]}`, message: "package unpacked" });
  });

  it("unpacks in place (default target: the destination itself)", async () => {
    const [manifest] = await manifestKeys(h.runtime.deps.destination);
    const [result] = await unpackAll(h, [manifest!]);
    expect(result).toMatchObject({ restored: 19, unchanged: 0 }); // files 0–19 but the missing file 7
    expect(sha(await readFile(join(h.destDir, files[0]!.key)))).toBe(files[0]!.sha256);
  });

  it("retry-failed copies failed files one object at a time (no package)", async () => {
    // The two missing files appear; their FAIL is made retryable as if it had been an outage.
    for (const i of [7, 90]) {
      await mkdir(join(h.sourceDir, files[i]!.key, ".."), { recursive: true });
      await writeFile(join(h.sourceDir, files[i]!.key), Buffer.alloc(files[i]!.size, 7));
    }
    await h.runtime.db.query(`UPDATE migration_files SET error_category = 'network' WHERE status = 'FAIL'`);
    const job = await h.runtime.deps.jobs.enqueue("retry-failed", {});
    expect((await finishedJob(h.runtime, "migration", job.id!)).state).toBe("completed");
    const { rows } = await h.runtime.db.query(`SELECT status, new_uri FROM migration_files WHERE file_id = ANY($1::int8[])`, [[files[7]!.id, files[90]!.id]]);
    expect(rows.map((r) => r.status)).toEqual(["SUCCESS", "SUCCESS"]);
    for (const r of rows) expect(r.new_uri).not.toContain("#");
  });
});

describe("packaged transfer, local → S3 (s3rver)", () => {
  let s3: S3Server;
  let h: PipelineHarness;
  let files: SeededFile[];

  beforeAll(async () => {
    s3 = await startS3Server();
    await s3.createBucket("packages");
    h = await createPipelineHarness("packaged-s3", {
      TRANSFER_MODE: "packaged",
      BATCH_SIZE: "60",
      PACKAGE_MAX_BYTES: String(1024 * 1024), // the 3 MiB file gets a package of its own
      VERIFY: "readback",
      // Multipart for the tar with the 3 MiB member.
      S3_MULTIPART_THRESHOLD: String(2 * 1024 * 1024),
      S3_PART_SIZE: String(5 * 1024 * 1024),
      DESTINATION_URL: `s3://packages/fleet?endpoint=${encodeURIComponent(s3.endpoint)}&region=${s3.region}`,
      DESTINATION_S3_ACCESS_KEY_ID: s3.accessKeyId,
      DESTINATION_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
    });
    files = await seedSourceFiles(h.runtime.db, h.sourceDir, seedOptions());
  });
  afterAll(async () => {
    await h?.close();
    await s3?.stop();
  });

  it("ships packages into the bucket and unpacks them there, every file byte for byte", async () => {
    await migrateAll(h);
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: 118, FAIL: 2, RETRYING: 0, withoutOutcome: 0 });
    await expectRows(h, files, /^s3:\/\/packages\/fleet\/\.fleet-packages\/range-\d+\/part-\d+-\d+\.tar#/);
    const manifests = await manifestKeys(h.runtime.deps.destination);
    // Range 1 (files 0–59): cut before the 3 MiB file 11, which stands alone, then the rest.
    expect(manifests.length).toBeGreaterThanOrEqual(4);
    const results = await unpackAll(h, manifests);
    expect(results.reduce((n, r) => n + (r.restored as number), 0)).toBe(118);
    for (const [i, f] of files.entries()) {
      if (i === 7 || i === 90) continue;
      expect(sha(await h.runtime.deps.destination.readBuffer(f.key))).toBe(f.sha256);
    }
    const again = await unpackAll(h, manifests);
    expect(again.reduce((n, r) => n + (r.unchanged as number), 0)).toBe(118);
  });
});

describe("crashes, re-runs and corrupt packages", () => {
  let h: PipelineHarness;
  let files: SeededFile[];

  beforeAll(async () => {
    h = await createPipelineHarness("packaged-crash", { TRANSFER_MODE: "packaged", BATCH_SIZE: "30", PACKAGE_MAX_FILES: "10" });
    files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 30, size: (i) => (i === 4 ? 2 * 1024 * 1024 : 2000 + i) });
    await seedRanges(h.runtime.db, 30);
  });
  afterAll(() => h.close());

  const rangeId = async () => Number((await h.runtime.db.query(`SELECT id FROM migration_ranges ORDER BY id LIMIT 1`)).rows[0].id);
  const run = async (jobId: string) => migrateRangeFiles({ rangeId: await rangeId(), jobId, deps: h.runtime.deps, log: h.log, signal: new AbortController().signal });
  const snapshot = async () => {
    const out: Record<string, string> = {};
    for await (const o of h.runtime.deps.destination.list("")) out[o.key] = sha(await h.runtime.deps.destination.readBuffer(o.key));
    return out;
  };

  it("a re-run after a crash mid-range ships the same packages again, never losing or doubling a file", async () => {
    // The first run: every package shipped, then a "crash" loses the outcomes of the second
    // and third package (as if the worker died between the upload and the database write), and
    // an earlier run left a half-written, different tar at the third package's key.
    const first = await run("first");
    expect([first.succeeded, first.failed]).toEqual([30, 0]);
    const shipped = await snapshot();
    const manifests = await manifestKeys(h.runtime.deps.destination);
    expect(manifests).toHaveLength(3);
    const third = parseManifest(await h.runtime.deps.destination.readBuffer(manifests[2]!), manifests[2]!);
    await h.runtime.db.query(`DELETE FROM migration_files WHERE file_id > $1`, [files[9]!.id]);
    await h.runtime.db.query(`UPDATE migration_ranges SET status = 'PENDING', owner = NULL, files_succeeded = 0, bytes_copied = 0`);
    await writeFile(join(h.destDir, third.tar.key), Buffer.from("half a tar"));

    const rerun = await run("rerun");
    expect([rerun.succeeded, rerun.failed, rerun.totals?.succeeded]).toEqual([20, 0, 30]);
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: 30, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
    // Same keys, same bytes: the partial tar was overwritten, nothing else appeared.
    expect(await snapshot()).toEqual(shipped);
    // And once complete, a run changes nothing at all.
    await h.runtime.db.query(`UPDATE migration_ranges SET status = 'PENDING', owner = NULL`);
    const third_ = await run("third");
    expect([third_.succeeded, third_.failed]).toEqual([0, 0]);
    expect(await snapshot()).toEqual(shipped);
  });

  describe("unpack of a damaged package is archive-corrupt", () => {
    let manifest: PackageManifest;
    let manifestKey: string;
    let tarBytes: Buffer;
    let target: Storage;
    let targetDir: string;

    beforeAll(async () => {
      manifestKey = (await manifestKeys(h.runtime.deps.destination))[0]!;
      manifest = parseManifest(await h.runtime.deps.destination.readBuffer(manifestKey!), manifestKey!);
      tarBytes = await readFile(join(h.destDir, manifest.tar.key));
      targetDir = await mkdtemp(join(tmpdir(), "fleet-corrupt-"));
      target = createStorage(targetDir);
    });
    afterAll(async () => {
      await target.close();
      await rm(targetDir, { recursive: true, force: true });
    });

    /** Stores a damaged copy of the package (tar bytes, and optionally a manifest edit) and unpacks it. */
    async function unpackDamaged(name: string, tar: Buffer, edit: (m: PackageManifest) => void = () => {}): Promise<unknown> {
      const copy: PackageManifest = JSON.parse(JSON.stringify(manifest));
      copy.tar.key = `damaged/${name}.tar`;
      edit(copy);
      await h.runtime.deps.destination.write(copy.tar.key, tar, { ifExists: "overwrite" });
      await h.runtime.deps.destination.write(`damaged/${name}.manifest.json`, serializeManifest(copy), { ifExists: "overwrite" });
      const input: UnpackInput = {
        packages: h.runtime.deps.destination,
        manifestKey: `damaged/${name}.manifest.json`,
        target,
        ifExists: "fail",
        smallFileBytes: 1024 * 1024,
        concurrency: 8,
        signal: new AbortController().signal,
        log: h.log,
      };
      return unpackPackage(input).then(() => undefined, (err: unknown) => err);
    }
    const expectCorrupt = (err: unknown, message: RegExp) => {
      expect(err).toBeInstanceOf(PermanentError);
      expect(err).toMatchObject({ category: "archive-corrupt", message: expect.stringMatching(message) });
    };

    it("a flipped byte inside a member", async () => {
      const bad = Buffer.from(tarBytes);
      bad[512 + 100] = bad[512 + 100]! ^ 0xff; // inside the first member's data (after its 512-byte header)
      expectCorrupt(await unpackDamaged("flipped", bad), /member .* has \d+ bytes sha256 [0-9a-f]+, the manifest says/);
      // The corrupt member was never published.
      await expect(stat(join(targetDir, manifest.members[0]!.path))).rejects.toMatchObject({ code: "ENOENT" });
    });

    it("a flipped byte in a header (bad header checksum)", async () => {
      const bad = Buffer.from(tarBytes);
      bad[1] = bad[1]! ^ 0x01; // the first member's name: its header checksum no longer matches
      expectCorrupt(await unpackDamaged("header", bad), /not a valid tar/);
    });

    it("a truncated tar, found by its size before anything is read", async () => {
      expectCorrupt(await unpackDamaged("short", tarBytes.subarray(0, tarBytes.length - 3000)), /is \d+ bytes, the manifest says \d+/);
    });

    it("a truncated tar whose manifest was made to match: the parser finds the cut", async () => {
      const short = tarBytes.subarray(0, 512 * 9 + 100);
      expectCorrupt(await unpackDamaged("cut", short, (m) => Object.assign(m.tar, { size: short.length, sha256: sha(short) })), /not a valid tar|ends after/);
    });

    it("a member the manifest does not list, and a manifest member missing from the tar", async () => {
      expectCorrupt(await unpackDamaged("extra", tarBytes, (m) => m.members.pop()), /is not in the manifest/);
      expectCorrupt(
        await unpackDamaged("missing", tarBytes, (m) => m.members.push({ path: "ghost.bin", size: 1, sha256: "0".repeat(64), fileId: 999_999 })),
        /ends after 10 of the manifest's 11 members \(first missing: "ghost.bin"\)/,
      );
    });

    it("a manifest that is not one", async () => {
      await h.runtime.deps.destination.write("damaged/garbage.manifest.json", Buffer.from("{ not json"), { ifExists: "overwrite" });
      const err = await unpackPackage({
        packages: h.runtime.deps.destination,
        manifestKey: "damaged/garbage.manifest.json",
        target,
        ifExists: "fail",
        smallFileBytes: 1024,
        concurrency: 1,
        signal: new AbortController().signal,
        log: h.log,
      }).catch((e: unknown) => e);
      expectCorrupt(err, /is not JSON/);
    });

    it("the unpack job fails at once (no retries) and logs why", async () => {
      const bad = Buffer.from(tarBytes);
      bad[512 + 10] = bad[512 + 10]! ^ 0xff;
      await unpackDamaged("for-job", bad);
      await h.startRunner();
      const job = await h.runtime.deps.jobs.enqueue("unpack", { manifest: "damaged/for-job.manifest.json", target: "destination/restored-damaged" });
      const done = await finishedJob(h.runtime, "migration", job.id!);
      expect(done.state).toBe("failed");
      expect(done.job.attemptsMade).toBe(1);
      expect(done.job.failedReason).toMatch(/sha256/);
      const log = await h.runtime.db.query(`SELECT level, details->>'category' AS category FROM migration_log WHERE job = 'unpack' AND subject = 'package:damaged/for-job.manifest.json'`);
      expect(log.rows).toEqual([{ level: "error", category: "archive-corrupt" }]);
    });
  });
});
