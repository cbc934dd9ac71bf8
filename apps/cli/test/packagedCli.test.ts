import { execFile } from "node:child_process";
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { z } from "zod";
import { databaseFields, parseConfig, redisFields } from "@fleet/core/config";
import { createLogger } from "@fleet/core/logger";
import { seedRanges } from "@fleet/db/sql/ranges";
import { migrateRangeFiles } from "@fleet/jobs/migration/migrateRangeFiles";
import { createFleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import type { FleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import { migrationFields } from "@fleet/jobs/settings";
import { storageFields } from "@fleet/jobs/storageSettings";
import { parseManifest } from "@fleet/storage/package/packageManifest";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { listPackageManifests } from "../src/commands/unpack";
import { verifyMigration } from "../src/commands/verify";

// The CLI on a packaged migration: `fleet migrate verify` checks files inside their packages;
// `fleet migrate unpack` enqueues unpack jobs (the compiled CLI, as operators run it).

const run = promisify(execFile);
const CLI = join(__dirname, "..", "dist", "main.js");

describe("the CLI with TRANSFER_MODE=packaged", () => {
  let database: TestDatabase;
  let runtime: FleetRuntime;
  let root: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    database = await createTestDatabase();
    root = await mkdtemp(join(tmpdir(), "fleet-verify-packages-"));
    const schema = z.object({ ...redisFields, ...databaseFields, ...migrationFields, ...storageFields });
    env = {
      PATH: process.env.PATH ?? "",
      DATABASE_URL: database.url,
      REDIS_URL: testRedisUrl(),
      FLEET_PREFIX: uniquePrefix("verify-packages"),
      SOURCE_URL: join(root, "source"),
      DESTINATION_URL: join(root, "destination"),
      TRANSFER_MODE: "packaged",
      PACKAGE_MAX_FILES: "25",
      TARGET_STORAGES: `restore=${join(root, "restore")}`,
    };
    const config = parseConfig(schema, env);
    runtime = createFleetRuntime({ config, log: createLogger({ name: "verify", LOG_LEVEL: "silent", LOG_FORMAT: "json" }), role: "test" });
    await seedSourceFiles(runtime.db, join(root, "source"), { count: 60, size: (i) => (i === 30 ? 2 * 1024 * 1024 : 500 + i) });
    const [range] = await seedRanges(runtime.db, 100);
    const signal = new AbortController().signal;
    await migrateRangeFiles({ rangeId: range!.id, jobId: "verify", deps: runtime.deps, log: createLogger({ name: "m", LOG_LEVEL: "silent", LOG_FORMAT: "json" }), signal });
  });
  afterAll(async () => {
    await runtime?.close();
    await cleanupPrefix(testRedisUrl(), runtime.prefix);
    await database?.drop();
    await rm(root, { recursive: true, force: true });
  });

  it("finds every packaged file intact", async () => {
    expect(await listPackageManifests(runtime.deps.destination, 1)).toHaveLength(3);
    const r = await verifyMigration(runtime.db, runtime.deps.source, runtime.deps.destination);
    expect(r).toEqual({ checked: 60, mismatches: [] });
  });

  it("fleet migrate unpack --range enqueues one unpack job per package of the range; bad arguments exit 2", async () => {
    const out = await run(process.execPath, [CLI, "migrate", "unpack", "--range", "1", "--target", "restore/range-1"], { env });
    expect(out.stdout.trim().split("\n")).toEqual([
      expect.stringMatching(/^enqueued unpack of \.fleet-packages\/range-1\/part-1-25\.manifest\.json \(job .+\)$/),
      expect.stringMatching(/part-26-50\.manifest\.json/),
      expect.stringMatching(/part-51-60\.manifest\.json/),
    ]);
    const waiting = await runtime.deps.jobs.queue("migration").getJobs(["waiting"]);
    expect(waiting.map((j) => [j.name, j.data.target]).sort()).toEqual([
      ["unpack", "restore/range-1"],
      ["unpack", "restore/range-1"],
      ["unpack", "restore/range-1"],
    ]);
    // A path or URL is no target: refused before anything is enqueued, with the reason.
    const byPath = await run(process.execPath, [CLI, "migrate", "unpack", "--range", "1", "--target", join(root, "restore")], { env }).catch((e: { code: number; stderr: string }) => e);
    expect(byPath).toMatchObject({ code: 1, stderr: expect.stringMatching(/must be a configured storage name/) });
    const both = await run(process.execPath, [CLI, "migrate", "unpack", "x.manifest.json", "--all"], { env }).catch((e: { code: number; stderr: string }) => e);
    expect(both).toMatchObject({ code: 2, stderr: expect.stringMatching(/exactly one of/) });
    const none = await run(process.execPath, [CLI, "migrate", "unpack", "--range", "99"], { env }).catch((e: { code: number; stderr: string }) => e);
    expect(none).toMatchObject({ code: 1, stderr: expect.stringMatching(/no packages found/) });
  });

  it("fleet migrate unpack --all and --range skip a package no row points at (an orphan of a crashed pack), and say so", async () => {
    // A pack that crashed after writing its tar and manifest, before its rows: the re-run cut
    // its files into other packages. Its files are counted nowhere; unpack --all restored them.
    const dest = join(root, "destination", ".fleet-packages", "range-1");
    await copyFile(join(dest, "part-1-25.tar"), join(dest, "part-1-24.tar"));
    await copyFile(join(dest, "part-1-25.manifest.json"), join(dest, "part-1-24.manifest.json"));
    try {
      for (const args of [["--all"], ["--range", "1"]]) {
        const out = await run(process.execPath, [CLI, "migrate", "unpack", ...args, "--target", "restore/orphans", "--json"], { env });
        const r = JSON.parse(out.stdout) as { jobs: Array<{ manifest: string; id: string }>; skippedOrphans: string[] };
        expect(r.jobs.map((j) => j.manifest)).toEqual([".fleet-packages/range-1/part-1-25.manifest.json", ".fleet-packages/range-1/part-26-50.manifest.json", ".fleet-packages/range-1/part-51-60.manifest.json"]);
        expect(r.skippedOrphans).toEqual([".fleet-packages/range-1/part-1-24.manifest.json"]);
      }
      const text = await run(process.execPath, [CLI, "migrate", "unpack", "--all", "--target", "restore/orphans"], { env });
      expect(text.stdout).toMatch(/^skipped 1 orphan package\(s\) that no migration_files row points at .*: \.fleet-packages\/range-1\/part-1-24\.manifest\.json$/m);
      const queued = await runtime.deps.jobs.queue("migration").getJobs(["waiting"]);
      expect(queued.filter((j) => j.data.target === "restore/orphans").map((j) => j.data.manifest)).not.toContain(".fleet-packages/range-1/part-1-24.manifest.json");
      // Named, it is the operator's choice.
      const named = await run(process.execPath, [CLI, "migrate", "unpack", ".fleet-packages/range-1/part-1-24.manifest.json", "--target", "restore/orphans"], { env });
      expect(named.stdout).toMatch(/^enqueued unpack of \.fleet-packages\/range-1\/part-1-24\.manifest\.json/);
    } finally {
      await rm(join(dest, "part-1-24.tar"));
      await rm(join(dest, "part-1-24.manifest.json"));
    }
  });

  it("reports the files of a package whose tar was damaged, and only those", async () => {
    const [, second] = await listPackageManifests(runtime.deps.destination);
    const manifest = parseManifest(await runtime.deps.destination.readBuffer(second!), second!);
    const tarPath = join(root, "destination", manifest.tar.key);
    const tar = await readFile(tarPath);
    tar[600] = tar[600]! ^ 0xff;
    await writeFile(tarPath, tar);
    const r = await verifyMigration(runtime.db, runtime.deps.source, runtime.deps.destination);
    expect(r.checked).toBe(60);
    expect(r.mismatches.map((m) => m.fileId).sort((a, b) => a - b)).toEqual(manifest.members.map((m) => m.fileId));
    expect(r.mismatches[0]!.problem).toMatch(/archive-corrupt|sha256/);
  });
});
