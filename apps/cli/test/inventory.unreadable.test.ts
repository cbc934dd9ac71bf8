import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { fleet, fleetJson } from "./runFleet";

/**
 * a re-scan that cannot read a folder "reports and skips" it (README) — but the files
 * in it did not vanish: they must not be marked vanished, and when the folder is readable
 * again they must not come back as new versions (migrated again although nothing changed).
 */
const NOBODY = 65534;

describe("fleet inventory re-scan with an unreadable folder", () => {
  let database: TestDatabase;
  let db: pg.Client;
  let root: string;
  let env: Record<string, string>;
  const prefix = uniquePrefix("cli-inventory-unreadable");

  beforeAll(async () => {
    database = await createTestDatabase();
    db = new pg.Client({ connectionString: database.url });
    await db.connect();
    root = await mkdtemp(join(tmpdir(), "fleet-unreadable-"));
    await chmod(root, 0o755);
    env = { DATABASE_URL: database.url, REDIS_URL: testRedisUrl(), FLEET_PREFIX: prefix, SOURCE_URL: join(root, "share"), LOG_LEVEL: "warn" };
  });
  afterAll(async () => {
    await cleanupPrefix(testRedisUrl(), prefix);
    await db?.end();
    await database?.drop();
    await rm(root, { recursive: true, force: true });
  });

  it("files of a folder the re-scan could not read are neither vanished nor new versions afterwards", async () => {
    const share = join(root, "share");
    for (const k of ["a/1.txt", "locked/secret.txt", "locked/other.txt", "z.txt"]) {
      await mkdir(join(share, k, ".."), { recursive: true });
      await writeFile(join(share, k), k);
    }
    await symlink("nowhere", join(share, "dangling"));
    await chmod(share, 0o755);
    await expect(fleetJson(env, ["inventory", "scan"])).resolves.toMatchObject({ new: 4 });

    // The nightly re-scan runs while the folder is (temporarily) unreadable to it.
    await chmod(join(share, "locked"), 0o000);
    let r;
    try {
      r = await fleet(env, ["inventory", "scan", "--json"], { uid: NOBODY, gid: NOBODY, cwd: root });
    } finally {
      await chmod(join(share, "locked"), 0o755);
    }
    expect(r.code).toBe(0);
    const rescan = JSON.parse(r.out);
    expect(rescan.unreadable).toEqual(["locked"]);
    // Nothing was deleted at the source.
    expect({ vanished: rescan.vanished, vanishedKeys: rescan.vanishedKeys }).toEqual({ vanished: 0, vanishedKeys: [] });

    // What it skipped stays on record after the terminal is gone.
    const last = await fleetJson(env, ["inventory", "last-scan"]);
    expect(last).toMatchObject({ unreadable: ["locked"], skipped: [expect.stringMatching(/^dangling \(/)], vanished: 0, files: 2 });
    const lastText = await fleet(env, ["inventory", "last-scan"]);
    expect([lastText.code, lastText.out]).toEqual([0, expect.stringMatching(/unreadable 1, skipped 1\nnot files, skipped:\n {2}dangling \(.*\)\ncould not be read, skipped:\n {2}locked\n$/)]);

    // Readable again: nothing changed, so nothing is a new version (nothing to migrate again).
    const again = await fleetJson(env, ["inventory", "scan"]);
    expect(again).toMatchObject({ new: 0, changed: 0, reappeared: 0, unchanged: 4 });
    const { rows } = await db.query(`SELECT count(*)::int AS n FROM source_files`);
    expect(rows[0].n).toBe(4);
  });
});
