import { createHash } from "node:crypto";
import { RETRYABLE_CATEGORIES } from "@fleet/core/errors";
import { parseManifest } from "@fleet/storage/package/packageManifest";
import type { PackageManifest } from "@fleet/storage/package/packageManifest";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { createWorkerFixture, outcomeSummary, rangeSummary } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * TRANSFER_MODE=packaged into S3 (s3rver) with real worker processes.
 * 1. Worker A is SIGKILLed while a package is being uploaded; worker B takes over.
 * 2. s3rver is SIGKILLed mid-upload (B running) and restarted 3 s later.
 * Afterwards: every file SUCCESS exactly once, every SUCCESS row points into a manifest that
 * lists it with the right sha256 and whose tar is in the bucket with the manifest's sha256,
 * every range COMPLETE, no FAIL rows, and all of it within tens of seconds.
 */

const FILES = 600;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("packaged → S3, worker SIGKILL and s3rver restart mid-package", () => {
  let s3: S3Server;
  let fx: WorkerFixture;
  let files: SeededFile[];

  beforeAll(async () => {
    s3 = await startS3Server();
    await s3.createBucket("pkgs");
    fx = await createWorkerFixture("pkg-s3-faults", {
      TRANSFER_MODE: "packaged",
      BATCH_SIZE: "200",
      PACKAGE_MAX_FILES: "50",
      CHUNK_SIZE: "50",
      COPY_CONCURRENCY: "4",
      WORKER_CONCURRENCY: "migration=1,maintenance=1",
      // ~800 KiB per package at 1 MiB/s: each package is in flight for most of a second.
      LINK_BWLIMIT: "1M",
      VERIFY: "readback",
      BREAKER_THRESHOLD: "3",
      BREAKER_PROBE_SCHEDULE: "500ms,1s",
      RECOVERY_INTERVAL: "1s",
      FSYNC_WRITES: "false",
      DESTINATION_URL: `s3://pkgs/fleet?endpoint=${encodeURIComponent(s3.endpoint)}&region=${s3.region}`,
      DESTINATION_S3_ACCESS_KEY_ID: s3.accessKeyId,
      DESTINATION_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
    });
    files = await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: FILES, size: (i) => 12_000 + ((i * 7_919) % 8_192) });
  }, 120_000);
  afterAll(async () => {
    await fx?.close();
    await s3?.stop();
  });

  it("every file SUCCESS exactly once, packages consistent with migration_files, no range stuck", async () => {
    const t0 = Date.now();
    const a = fx.spawnWorker("A");
    await a.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    // Mid-range: a package or two recorded, the next in flight.
    await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).SUCCESS >= 100, 60_000, "100 files recorded", 20);
    await new Promise((r) => setTimeout(r, 300));
    a.signal("SIGKILL");
    await a.exited;
    const killedAt = Date.now();
    const atKill = await outcomeSummary(fx.runtime);

    const b = fx.spawnWorker("B");
    await b.started();
    await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).SUCCESS >= atKill.SUCCESS + 100, 60_000, "B to record 100 more files", 20);
    await new Promise((r) => setTimeout(r, 300));
    s3.kill();
    const s3DownAt = Date.now();
    await new Promise((r) => setTimeout(r, 3_000));
    await s3.restart();
    const s3UpAt = Date.now();

    let done = false;
    try {
      await fx.waitFor(
        async () => {
          const o = await outcomeSummary(fx.runtime);
          const r = await rangeSummary(fx.runtime);
          return o.withoutOutcome === 0 && o.RETRYING === 0 && Object.keys(r).length === 1 && r.COMPLETE !== undefined;
        },
        90_000,
        "every file with an outcome and every range COMPLETE",
        200,
      );
      done = true;
    } finally {
      // What happened, for a failure (the worker logs are gone with the fixture).
      // eslint-disable-next-line no-console
      if (!done) console.log(JSON.stringify({
        done,
        killAfterMs: killedAt - t0,
        atKill,
        s3DownMs: s3UpAt - s3DownAt,
        finishedAfterS3UpMs: Date.now() - s3UpAt,
        totalMs: Date.now() - t0,
        outcomes: await outcomeSummary(fx.runtime),
        ranges: await rangeSummary(fx.runtime),
        failRows: (await fx.runtime.db.query(`SELECT error_category, count(*)::int AS n, min(error_message) AS msg FROM migration_files WHERE status = 'FAIL' GROUP BY 1`)).rows,
        bWarnings: b.logs.filter((l) => (l.level ?? 0) >= 40).slice(-10).map((l) => `${l.msg} ${(l.err as { message?: string } | undefined)?.message ?? ""}`),
      }));
    }

    expect(await outcomeSummary(fx.runtime)).toEqual({ SUCCESS: FILES, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
    expect((await fx.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_files`)).rows[0]!.n).toBe(FILES);
    const fails = await fx.runtime.db.query(`SELECT file_id FROM migration_files WHERE status = 'FAIL' AND NOT (error_category = ANY($1::text[]))`, [RETRYABLE_CATEGORIES]);
    expect(fails.rows).toEqual([]);

    // Every manifest in the bucket: its tar is there with the manifest's size and sha256.
    const dest = fx.runtime.deps.destination;
    const manifests = new Map<string, PackageManifest>();
    for await (const o of dest.list(".fleet-packages/")) {
      if (o.key.endsWith(".manifest.json")) manifests.set(o.key, parseManifest(await dest.readBuffer(o.key), o.key));
    }
    const tarProblems: string[] = [];
    const memberOf = new Map<string, { sha256: string; fileId: number }>();
    for (const [key, m] of manifests) {
      const tar = await dest.readBuffer(m.tar.key).catch((err: Error) => err);
      if (!Buffer.isBuffer(tar)) tarProblems.push(`${key}: tar unreadable: ${tar.message}`);
      else if (tar.length !== m.tar.size || sha(tar) !== m.tar.sha256) tarProblems.push(`${key}: tar ${tar.length} bytes ${sha(tar)}, manifest says ${m.tar.size} ${m.tar.sha256}`);
      for (const member of m.members) memberOf.set(`${m.tar.uri}#${member.path.split("/").map(encodeURIComponent).join("/")}`, { sha256: member.sha256, fileId: member.fileId });
    }
    expect(tarProblems).toEqual([]);

    // Every SUCCESS row points at a member of a manifest that lists it with its sha256.
    const rows = (await fx.runtime.db.query<{ file_id: number; new_uri: string; sha256: string }>(`SELECT file_id, new_uri, sha256 FROM migration_files WHERE status = 'SUCCESS'`)).rows;
    const bySeed = new Map(files.map((f) => [f.id, f]));
    const dangling = rows.filter((r) => {
      const m = memberOf.get(r.new_uri);
      return !m || m.fileId !== Number(r.file_id) || m.sha256 !== r.sha256 || bySeed.get(Number(r.file_id))?.sha256 !== r.sha256;
    });
    expect(dangling.map((r) => r.new_uri).slice(0, 5)).toEqual([]);
    // Each file in one package that outcomes point at. A package nobody points at may be left by
    // the killed worker (uploaded, its outcomes never recorded): garbage, not a second copy.
    const pointed = new Set(rows.map((r) => r.new_uri.split("#")[0]));
    const memberCount = new Map<number, number>();
    for (const m of manifests.values()) if (pointed.has(m.tar.uri)) for (const mem of m.members) memberCount.set(mem.fileId, (memberCount.get(mem.fileId) ?? 0) + 1);
    expect([...memberCount.values()].filter((n) => n > 1)).toEqual([]);

    const ranges = (await fx.runtime.db.query<{ owner: string | null; files_succeeded: number; files_failed: number }>(`SELECT owner, files_succeeded, files_failed FROM migration_ranges`)).rows;
    expect(ranges.reduce((n, r) => n + r.files_succeeded, 0)).toBe(FILES);
    expect(ranges.every((r) => r.owner === null && r.files_failed === 0)).toBe(true);

    // "Soon": tens of seconds after s3rver came back (the link alone carries ~8.6 MiB at 1 MiB/s).
    expect(Date.now() - s3UpAt).toBeLessThan(40_000);
    b.signal("SIGTERM");
    expect(await b.exited).toMatchObject({ code: 0 });
  }, 240_000);
});
