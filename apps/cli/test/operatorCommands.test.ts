import { userInfo } from "node:os";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { bullPrefix } from "@fleet/core/redis";
import { createPool } from "@fleet/db/pool";
import { writeLog } from "@fleet/db/sql/log";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";

/** The compiled `fleet` (run after npm run build) against its own Redis prefix. */
const CLI = join(__dirname, "..", "dist", "main.js");

describe("fleet queues, pause/resume, lock/unlock, ops", () => {
  const prefix = uniquePrefix("cli-ops");
  const env = { PATH: process.env.PATH, FLEET_ENV_FILE: join(__dirname, "no-such.env"), REDIS_URL: testRedisUrl(), FLEET_PREFIX: prefix, DATABASE_URL: "" };
  let database: TestDatabase;
  let redis: Redis;
  let migration: Queue;

  function fleet(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    return new Promise((resolve) => child.on("close", (code) => resolve({ code, out, err })));
  }
  const json = async (...args: string[]) => {
    const r = await fleet(...args, "--json");
    expect([args.join(" "), r.code, r.err]).toEqual([args.join(" "), 0, ""]);
    return JSON.parse(r.out) as any;
  };

  beforeAll(async () => {
    // ops submit/show/list/cancel write and read the operation history.
    database = await createTestDatabase();
    env.DATABASE_URL = database.url;
    redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    migration = new Queue("migration", { connection: redis, prefix: bullPrefix(prefix) });
  });
  afterAll(async () => {
    await migration.close();
    redis.disconnect();
    await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
    await database?.drop();
  });

  it("submits, lists, shows and cancels an operation; bad names and payloads exit 1 with the reason", async () => {
    expect(await json("ops", "submit", "migrate-range", "--data", '{"rangeId": 4}')).toEqual({ id: "range-4", name: "migrate-range", queue: "migration" });
    expect(await migration.getJobState("range-4")).toBe("waiting");
    // The same range again is a duplicate: said so, nothing new queued, its record left as it is.
    expect(await json("ops", "submit", "migrate-range", "--data", '{"rangeId": 4}')).toEqual({ id: "range-4", name: "migrate-range", queue: "migration", deduplicated: true });
    expect((await fleet("ops", "submit", "migrate-range", "--data", '{"rangeId": 4}')).out).toMatch(/^migrate-range is already queued as operation range-4 \(queue migration\): this submission was a duplicate/);
    expect((await json("ops", "list", "--state", "waiting")).map((o: { id: string }) => o.id)).toEqual(["range-4"]);
    // A long id (a script's own) keeps the list in columns.
    await migration.add("migrate-range", { rangeId: 5 }, { jobId: "nightly-export-2026-12-06-range-0005-retry", attempts: 12 });
    const listed = (await fleet("ops", "list", "--state", "waiting")).out.trimEnd().split("\n");
    expect(listed).toHaveLength(2);
    for (const column of [/ migrate-range /, / migration /, / waiting /, / attempt /, / \d{4}-\d\d-\d\dT/]) expect([listed, new Set(listed.map((l) => column.exec(l)?.index)).size]).toEqual([listed, 1]);
    await migration.remove("nightly-export-2026-12-06-range-0005-retry");
    expect(await json("ops", "show", "range-4")).toMatchObject({ id: "range-4", state: "waiting", data: { rangeId: 4 } });
    const shown = await fleet("ops", "show", "range-4");
    expect(shown.out).toMatch(/^range-4\s+migrate-range\s+migration\s+waiting\s+attempt 0\/6/);

    const bad = await fleet("ops", "submit", "migrate-range", "--data", '{"rangeId": "x"}');
    expect([bad.code, bad.err]).toEqual([1, expect.stringContaining('invalid payload for job "migrate-range": rangeId')]);
    const unknown = await fleet("ops", "submit", "format-disk");
    expect([unknown.code, unknown.err]).toEqual([1, expect.stringContaining('unknown job "format-disk"')]);

    // A range's job is re-created by the fleet while the range has files left: not cancellable,
    // and the answer says how to stop copying (found by review: it was back within seconds).
    const refused = await fleet("ops", "cancel", "range-4");
    expect([refused.code, refused.out]).toEqual([1, expect.stringMatching(/^operation range-4 is not cancelled: a range's job is re-created by the fleet .*fleet pause migration/)]);
    expect(await migration.getJobState("range-4")).toBe("waiting");

    const retry = await json("ops", "submit", "retry-failed");
    expect(await json("ops", "cancel", retry.id)).toEqual({ id: retry.id, kind: "removed", was: "waiting" });
    expect(await migration.getJobState(retry.id)).toBe("unknown");
    // BullMQ has forgotten it; the history says who submitted and cancelled it.
    const past = await json("ops", "show", retry.id);
    expect(past).toMatchObject({ id: retry.id, state: "removed", source: "history", submittedBy: expect.stringMatching(/^cli:/), name: "retry-failed" });
    expect(past.log).toEqual([expect.stringMatching(/ waiting: submitted by cli:/), expect.stringMatching(/ removed: cancelled by cli:.* before it started$/)]);
    expect((await fleet("ops", "show", "range-404")).code).toBe(1);
  });

  it("lock refuses submissions with the reason until unlock", async () => {
    expect(await json("lock", "--reason", "storage upgrade")).toMatchObject({ locked: { reason: "storage upgrade" } });
    const refused = await fleet("ops", "submit", "seed-ranges");
    expect([refused.code, refused.err]).toEqual([1, expect.stringContaining("the API is locked (storage upgrade")]);
    expect(await json("unlock")).toEqual({ locked: false, removed: true });
    expect((await fleet("ops", "submit", "seed-ranges")).code).toBe(0);
  });

  it("queues shows counts and pause state; pause and resume act on the queue; unknown queues exit 1", async () => {
    expect(await json("pause", "migration")).toEqual({ queue: "migration", paused: true });
    expect(await migration.isPaused()).toBe(true);
    const rows = (await json("queues")) as Array<{ queue: string; paused: boolean; counts: Record<string, number> }>;
    expect(rows.find((r) => r.queue === "migration")).toMatchObject({ paused: true });
    expect(rows.find((r) => r.queue === "maintenance")).toMatchObject({ paused: false, counts: { waiting: 1 } });
    expect((await fleet("queues")).out.split("\n")[0]).toMatch(/^queue\s+waiting\s+active\s+delayed\s+prioritized\s+failed\s+completed\s+paused$/);
    expect(await json("resume", "migration")).toEqual({ queue: "migration", paused: false });
    expect(await migration.isPaused()).toBe(false);
    // Recorded with who did it, as the board's are.
    const user = userInfo().username;
    expect(((await json("log", "--subject", "queue:migration")) as Array<{ job: string; message: string }>).filter((e) => e.job === "cli").map((e) => e.message)).toEqual([
      `queue migration paused by cli:${user}`,
      `queue migration resumed by cli:${user}`,
    ]);
    const unknown = await fleet("pause", "nope");
    expect([unknown.code, unknown.err]).toEqual([1, expect.stringContaining('unknown queue "nope"')]);
  });

  it("log shows migration_log newest last, by job or subject: the board's actions with who made them", async () => {
    const db = createPool({ connectionString: database.url, max: 1 });
    try {
      // As the dashboard records a pause and a clean from the board (apps/dashboard/src/boardAudit.ts);
      // only these (the earlier tests' pause and resume are recorded too).
      await db.query("DELETE FROM migration_log");
      await writeLog(db, [
        { level: "info", job: "kill", subject: "file:3", message: "killed by bob" },
        { level: "info", job: "board", subject: "queue:migration", message: "queue migration paused from the board by alice", details: { route: "PUT /api/queues/:queueName/pause", status: 200, by: "alice", queue: "migration" } },
        { level: "warn", job: "board", subject: "queue:migration", message: "failed jobs of queue migration cleaned from the board by alice (3 before, 0 after)" },
      ]);
    } finally {
      await db.end();
    }
    const board = await fleet("log", "--job", "board");
    expect(board.code).toBe(0);
    expect(board.out.trimEnd().split("\n")).toEqual([
      expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  info   board  queue:migration  queue migration paused from the board by alice$/),
      expect.stringMatching(/Z  warn   board  queue:migration  failed jobs of queue migration cleaned from the board by alice \(3 before, 0 after\)$/),
    ]);
    expect(await json("log", "--subject", "queue:migration", "--limit", "1")).toEqual([
      { at: expect.any(String), level: "warn", job: "board", subject: "queue:migration", message: "failed jobs of queue migration cleaned from the board by alice (3 before, 0 after)", details: null },
    ]);
    expect((await json("log")).map((e: { subject: string }) => e.subject)).toEqual(["file:3", "queue:migration", "queue:migration"]);
    expect((await fleet("log", "--subject", "queue:none")).out).toBe("no entries\n");
  });

  it("text from outside reaches the terminal with its control characters escaped, and --json stays JSON that reads back the same", async () => {
    // A file name or a consent record can carry escape sequences: OSC 52 writes the clipboard,
    // ESC [ 2 J clears the screen, CR hides what came before, U+202E reverses what follows, and
    // C1's CSI (U+009B) is ESC [ to some terminals.
    const hostile = "evil\u001b]52;c;ZXZpbA==\u0007 \u001b[2J\rhidden \u202efdp.exe \u009b31m\n2026-12-11T10:00:00Z  info   board  queue:migration  paused by bob";
    const db = createPool({ connectionString: database.url, max: 1 });
    try {
      await writeLog(db, [{ level: "warn", job: "scan", subject: "file:hostile", message: hostile }]);
    } finally {
      await db.end();
    }
    const text = await fleet("log", "--subject", "file:hostile");
    expect(text.code).toBe(0);
    expect(text.out).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e]/);
    expect(text.out).toContain("evil\\x1b]52;c;ZXZpbA==\\x07 \\x1b[2J\\x0dhidden \\u202efdp.exe \\x9b31m\\n2026-12-11T10:00:00Z");
    // One entry, one line: its text cannot print a line that looks like another entry.
    expect(text.out.trimEnd().split("\n")).toHaveLength(1);
    const raw = await fleet("log", "--subject", "file:hostile", "--json");
    expect(raw.out).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e]/);
    expect((JSON.parse(raw.out) as Array<{ message: string }>)[0]!.message).toBe(hostile);
  });
});
