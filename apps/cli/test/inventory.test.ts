import { execFileSync } from "node:child_process";
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { fleet, fleetJson } from "./runFleet";

/**
 * `fleet inventory scan | import` as an operator runs them (the compiled CLI): a scan as an
 * unprivileged user skips and reports a folder it may not read and does not follow a symlink
 * out of the root; a scan interrupted with Ctrl-C says how to go on and the next run resumes;
 * an import reports bad lines by number and exits 1.
 */
const NOBODY = 65534;

describe("fleet inventory", () => {
  let database: TestDatabase;
  let db: pg.Client;
  let root: string;
  let env: Record<string, string>;
  const prefix = uniquePrefix("cli-inventory");

  beforeAll(async () => {
    database = await createTestDatabase();
    db = new pg.Client({ connectionString: database.url });
    await db.connect();
    root = await mkdtemp(join(tmpdir(), "fleet-inventory-cli-"));
    await chmod(root, 0o755);
    env = { DATABASE_URL: database.url, REDIS_URL: testRedisUrl(), FLEET_PREFIX: prefix, SOURCE_URL: join(root, "share"), LOG_LEVEL: "warn" };
  });
  afterAll(async () => {
    await cleanupPrefix(testRedisUrl(), prefix);
    await db?.end();
    await database?.drop();
    await rm(root, { recursive: true, force: true });
  });

  it("scans as an unprivileged user: an unreadable folder is reported and skipped, a symlink out of the root not followed", async () => {
    const share = join(root, "share");
    for (const k of ["a/1.txt", "a/2.txt", "locked/secret.txt", "z.txt"]) {
      await mkdir(join(share, k, ".."), { recursive: true });
      await writeFile(join(share, k), k);
    }
    await writeFile(join(root, "outside.txt"), "outside");
    await symlink(join(root, "outside.txt"), join(share, "link-out.txt"));
    await symlink(join(share, "gone.txt"), join(share, "dangling.txt"));
    execFileSync("mkfifo", [join(share, "a", "pipe")]);
    await chmod(join(share, "locked"), 0o000);
    try {
      const r = await fleet(env, ["inventory", "scan"], { uid: NOBODY, gid: NOBODY, cwd: root });
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/^scanned 3 files \(\d+ B\) of local:.*share in \d+s \(.* files\/s\)\n {2}new 3, changed 0/);
      expect(r.out).toContain("1 folders or files could not be read and were skipped");
      expect(r.err).toContain("fleet: could not read locked (skipped)");
      // Entries that are not files are skipped, and said so (they used to be left out without a word).
      expect(r.out).toContain("3 entries are not files and were skipped");
      expect(r.err).toContain("fleet: not a file, skipped: a/pipe (a FIFO)");
      expect(r.err).toContain("fleet: not a file, skipped: dangling.txt (a dangling symlink)");
      expect(r.err).toContain("fleet: not a file, skipped: link-out.txt (a symlink out of the root)");
      // The new files go into ranges now, not when the scheduler's idle watcher next looks.
      expect(r.err).toContain("fleet: 3 new or changed files: their migration is queued (seed-ranges)");
      const { rows } = await db.query(`SELECT uri FROM source_files ORDER BY uri`);
      expect(rows.map((x) => x.uri)).toEqual(["a/1.txt", "a/2.txt", "z.txt"]);
    } finally {
      await chmod(join(share, "locked"), 0o755);
    }
  });

  it("a re-scan reports what changed; --json has the vanished keys", async () => {
    const share = join(root, "share");
    await writeFile(join(share, "a/2.txt"), "a/2.txt, longer now");
    await rm(join(share, "z.txt"));
    await writeFile(join(share, "b.txt"), "new");
    const r = await fleetJson(env, ["inventory", "scan"]);
    // root reads the formerly locked folder now: its file is new too.
    expect(r).toMatchObject({ new: 2, changed: 1, unchanged: 1, vanished: 1, vanishedKeys: ["z.txt"], resumed: false });
    const text = await fleet(env, ["inventory", "scan"]);
    expect(text.out).toMatch(/new 0, changed 0 \(new versions to migrate\), back after vanishing 0, unchanged 4, vanished 0/);
  });

  it("Ctrl-C stops a scan saying how to go on; the next run resumes after what was written", async () => {
    const big = join(root, "big");
    // Far more than the batches the scan holds while its writes wait (two in flight and the one
    // being listed, 10,000 each): the listing is still going when Ctrl-C arrives. With 24,000
    // files the listing could end before it, and the scan then finished its writes (exit 0).
    for (let d = 0; d < 60; d++) {
      await mkdir(join(big, `d${String(d).padStart(2, "0")}`), { recursive: true });
      await Promise.all(Array.from({ length: 800 }, (_, i) => writeFile(join(big, `d${String(d).padStart(2, "0")}`, `f${i}.bin`), `${d}/${i}`)));
    }
    const scanEnv = { ...env, SOURCE_URL: big };
    // Hold the scan's first batch write (a lock on source_files) so that Ctrl-C lands mid-scan.
    const blocker = new pg.Client({ connectionString: database.url });
    await blocker.connect();
    await blocker.query("BEGIN");
    await blocker.query("LOCK TABLE source_files IN SHARE ROW EXCLUSIVE MODE");
    const running = fleet(scanEnv, ["inventory", "scan"]);
    try {
      await waitUntil(async () => (await db.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'fleet-cli' AND wait_event_type = 'Lock'`)).rowCount! >= 1);
      running.child.kill("SIGINT");
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      await blocker.query("COMMIT");
      await blocker.end();
    }
    const stopped = await running;
    expect([stopped.code, stopped.err]).toEqual([130, expect.stringContaining("scan interrupted; what was listed so far is saved: run the same command again to go on from there")]);
    const written = (await db.query(`SELECT count(*)::int AS n FROM source_files WHERE uri LIKE 'd%/f%'`)).rows[0].n as number;
    expect(written).toBeGreaterThan(0);
    expect(written).toBeLessThan(48_000);

    const resumed = await fleetJson(scanEnv, ["inventory", "scan"]);
    expect(resumed).toMatchObject({ resumed: true, files: 48_000 });
    const { rows } = await db.query(`SELECT count(*)::int AS n, count(DISTINCT uri)::int AS keys FROM source_files WHERE uri LIKE 'd%/f%'`);
    expect(rows[0]).toEqual({ n: 48_000, keys: 48_000 });
  }, 120_000);

  it("SIGKILL with two batch writes in flight, the later one merged and the earlier one held: the resumed scan ends with exactly the tree's rows", async () => {
    // Three folders of one batch (10,000 files) each, listed in that order. A file of the
    // second batch changed since the last scan: its old row is held (FOR UPDATE), so the
    // second batch's write waits on it while the third is merged beside it. The cursor must
    // stay after the first batch: the third may not commit (and move the cursor) before the
    // second, or a resumed scan would never list the second batch's files again.
    const tree = join(root, "killed");
    const held = "k/d1/f05000.bin";
    const scanEnv = { ...env, SOURCE_URL: tree };
    await mkdir(join(tree, "k", "d1"), { recursive: true });
    await writeFile(join(tree, held), "old");
    expect(await fleetJson(scanEnv, ["inventory", "scan", "--prefix", "k/"])).toMatchObject({ new: 1 });
    const expected: Array<{ uri: string; size: number }> = [];
    for (let d = 0; d < 3; d++) {
      await mkdir(join(tree, "k", `d${d}`), { recursive: true });
      const keys = Array.from({ length: 10_000 }, (_, i) => `k/d${d}/f${String(i).padStart(5, "0")}.bin`);
      await Promise.all(keys.map((k) => writeFile(join(tree, k), k === held ? "changed: longer" : k)));
      expected.push(...keys.map((uri) => ({ uri, size: uri === held ? 15 : uri.length })));
    }
    const blocker = new pg.Client({ connectionString: database.url });
    await blocker.connect();
    await blocker.query("BEGIN");
    await blocker.query(`SELECT id FROM source_files WHERE uri = $1 FOR UPDATE`, [held]);
    const backends = async (where: string) => (await db.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'fleet-cli' AND ${where}`)).rowCount ?? 0;
    const running = fleet(scanEnv, ["inventory", "scan", "--prefix", "k/"]);
    let thirdMergedBesideSecond = false;
    const savedFiles = async () => {
      const row = (await db.query(`SELECT cursor FROM sync_state WHERE key LIKE 'inventory-scan:%:k/'`)).rows[0] as { cursor: string } | undefined;
      return row ? ((JSON.parse(row.cursor) as { counts?: { files?: number } }).counts?.files ?? 0) : 0;
    };
    try {
      await waitUntil(async () => (await backends("wait_event_type = 'Lock'")) === 1);
      // The first batch's write is not held: it commits and moves the cursor past it. On a
      // loaded machine that commit can come after the second batch is already waiting on the
      // held row (seen in CI: killed before it, the cursor was still at the start), so the
      // kill waits for it; the two writes in flight are the second's and the third's.
      await waitUntil(async () => (await savedFiles()) >= 10_000);
      // The third batch, merged, waiting for the second to commit first.
      thirdMergedBesideSecond = await waitUntil(async () => (await backends("state = 'idle in transaction'")) === 1, 10_000).then(
        () => true,
        () => false,
      );
      running.child.kill("SIGKILL");
      expect((await running).signal).toBe("SIGKILL");
    } finally {
      await blocker.query("ROLLBACK");
      await blocker.end();
    }
    // The killed process's backends roll back and go.
    await waitUntil(async () => (await backends("true")) === 0);
    const cursor = JSON.parse((await db.query(`SELECT cursor FROM sync_state WHERE key LIKE 'inventory-scan:%:k/'`)).rows[0].cursor as string);
    expect(cursor).toMatchObject({ after: "k/d0/f09999.bin", counts: { files: 10_000, new: 10_000 } });
    const committed = await db.query(`SELECT uri FROM source_files WHERE uri LIKE 'k/%' ORDER BY uri`);
    expect(committed.rows.map((r) => r.uri)).toEqual([...expected.slice(0, 10_000).map((e) => e.uri), held]);

    const resumed = await fleetJson(scanEnv, ["inventory", "scan", "--prefix", "k/"]);
    expect(resumed).toMatchObject({ resumed: true, files: 30_000, new: 29_999, changed: 1, unchanged: 0, vanished: 0 });
    const current = await db.query(`SELECT uri, size::int AS size FROM source_files WHERE uri LIKE 'k/%' AND superseded_by IS NULL ORDER BY uri`);
    expect(current.rows).toEqual(expected.sort((a, b) => (a.uri < b.uri ? -1 : 1)));
    // And nothing else: the held file's old version, superseded by its new one.
    const old = await db.query(`SELECT uri, size::int AS size FROM source_files WHERE uri LIKE 'k/%' AND superseded_by IS NOT NULL`);
    expect(old.rows).toEqual([{ uri: held, size: 3 }]);
    // Last, so that a scan writing one batch at a time still shows the rows above right.
    expect(thirdMergedBesideSecond).toBe(true);
  }, 180_000);

  it("import: bad lines by number (exit 1), good ones imported; importing again changes nothing", async () => {
    const file = join(root, "inventory.csv");
    await writeFile(file, ["uri,size,owner,sha256", "imp/a.bin,10,alice,", "imp/b.bin,-1,bob,", "imp/c.bin,30,,zz"].join("\n"));
    const r = await fleet(env, ["inventory", "import", file]);
    expect(r.code).toBe(1);
    expect(r.out).toBe(
      [
        "imported 1 of 3 records: 1 new, 0 changed (new versions), 0 back after vanishing, 0 unchanged",
        "2 rejected (fix them and import the file again: lines already imported do not change):",
        "  line 3: size: expected a whole number of bytes",
        "  line 4: sha256: expected 64 hexadecimal digits",
        "",
      ].join("\n"),
    );
    const jsonl = join(root, "inventory.data");
    await writeFile(jsonl, `${JSON.stringify({ uri: "imp/a.bin", size: 10, owner: "alice" })}\n${JSON.stringify({ uri: "imp/d.bin", size: 4 })}\n`);
    expect(await fleetJson(env, ["inventory", "import", jsonl, "--format", "jsonl"])).toMatchObject({ imported: 2, new: 1, unchanged: 1, rejected: 0 });
    const stdin = await fleet(env, ["inventory", "import", "-", "--format", "jsonl"], { stdin: `${JSON.stringify({ uri: "imp/e.bin", size: 5 })}\n` });
    expect([stdin.code, stdin.out]).toEqual([0, expect.stringContaining("imported 1 of 1 records: 1 new")]);
  });
});

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 100));
  }
}
