import { randomBytes } from "node:crypto";
import { mkdir, readdir, rm, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { createWorkerFixture } from "./workerFixture";
import type { LogLine, WorkerFixture, WorkerProcess } from "./workerFixture";

/**
 * LINK_MAX_TRANSFERS (transfer slots, leases in a Redis sorted set) with real worker processes.
 * Transfers are made slow with LINK_BWLIMIT so slots are held for seconds.
 *
 * 1. A worker holding every slot is SIGKILLed: the others get them back within the lease.
 * 2. A worker holding slots is SIGSTOPped past the lease (10 s), another takes the freed
 *    slots, then the first is continued. Found by review: its transfers went on beside the
 *    other's (8 files in transfer with a limit of 4). Now they wait for a slot. Measured as
 *    temp files at the destination that grow within one window (in transfer now).
 */

const MiB = 1024 * 1024;
const FILE_BYTES = 8 * MiB;
const MAX = 4;

describe("LINK_MAX_TRANSFERS slots with worker processes killed or stopped", () => {
  let fx: WorkerFixture;
  let dest: string;

  beforeAll(async () => {
    dest = join("/dev/shm", `fleet-link-slots-${randomBytes(4).toString("hex")}`);
    await mkdir(dest, { recursive: true });
    fx = await createWorkerFixture("link-slots", {
      SOURCE_URL: `null:zero?size=${FILE_BYTES}`,
      DESTINATION_URL: dest,
      VERIFY: "write",
      BATCH_SIZE: "20",
      COPY_CONCURRENCY: "4",
      WORKER_CONCURRENCY: "migration=1,maintenance=1,remote=1",
      LINK_BWLIMIT: "4M",
      LINK_MAX_TRANSFERS: String(MAX),
      // Keep ranges and jobs with their worker through a 12 s stop: only the slots are studied.
      RANGE_STALE_AFTER: "120s",
      LOCK_DURATION: "60s",
      STALLED_INTERVAL: "30s",
      LOG_LEVEL: "info",
    });
    await fx.runtime.db.query(
      `INSERT INTO source_files (uri, name, size) SELECT 'f-' || i || '.bin', 'f-' || i || '.bin', $1 FROM generate_series(1, 400) AS i`,
      [FILE_BYTES],
    );
  });
  afterAll(async () => {
    await fx?.close();
    await rm(dest, { recursive: true, force: true });
  });

  /** Live slot holders per worker pid (lease not expired by Redis's clock). */
  const holders = async (): Promise<Map<string, number>> => {
    const keys: string[] = [];
    let cursor = "0";
    do {
      const [next, found] = await fx.runtime.redis.scan(cursor, "MATCH", `*${fx.prefix}*:slots`, "COUNT", 1000);
      cursor = next;
      keys.push(...found);
    } while (cursor !== "0");
    const [sec, usec] = await fx.runtime.redis.time();
    const now = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
    const out = new Map<string, number>();
    for (const key of keys) {
      const entries = await fx.runtime.redis.zrange(key, 0, -1, "WITHSCORES");
      for (let i = 0; i < entries.length; i += 2) {
        if (Number(entries[i + 1]) < now) continue;
        const pid = entries[i]!.split(":")[1]!;
        out.set(pid, (out.get(pid) ?? 0) + 1);
      }
    }
    return out;
  };
  const heldBy = async (w: WorkerProcess) => (await holders()).get(String(w.child.pid)) ?? 0;

  // Temp files that grew since the last look: transfers moving bytes now. Finished files are deleted.
  const sizes = new Map<string, number>();
  const growing = async (): Promise<number> => {
    let n = 0;
    for (const name of await readdir(dest)) {
      const path = join(dest, name);
      const size = await stat(path).then((s) => s.size, () => -1);
      if (size < 0) continue;
      if (!name.endsWith(".tmp")) {
        if (size === FILE_BYTES) await unlink(path).catch(() => undefined);
        continue;
      }
      if (size > (sizes.get(name) ?? 0)) n++;
      sizes.set(name, size);
    }
    return n;
  };

  let b: WorkerProcess;

  it("a SIGKILLed worker's slots come back within the 10 s lease; meanwhile the fleet runs below LINK_MAX_TRANSFERS", async () => {
    const a = fx.spawnWorker("A");
    await a.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    await fx.waitFor(async () => (await heldBy(a)) === MAX || undefined, 30_000, "A holding every slot", 100);
    b = fx.spawnWorker("B");
    await b.started();
    await new Promise((r) => setTimeout(r, 1_000));
    expect(await heldBy(b)).toBe(0);

    a.signal("SIGKILL");
    const killedAt = Date.now();
    await a.exited;
    const firstAt = await fx.waitFor(async () => ((await heldBy(b)) >= 1 ? Date.now() : undefined), 30_000, "B getting a slot", 100);
    const allAt = await fx.waitFor(async () => ((await heldBy(b)) === MAX ? Date.now() : undefined), 30_000, "B holding every slot", 100);
    process.stdout.write(`permits after SIGKILL: B got its first slot ${firstAt - killedAt} ms and all ${MAX} ${allAt - killedAt} ms after A died (0 transfers fleet-wide meanwhile)\n`);
    // README: "a worker that dies stops renewing and its slots free themselves after 10 s".
    // 9.6 s in a loaded CI run: the lease is fixed, the polls (B's and this test's) are what load
    // stretches. 16 s still tells a lapsed lease from a slot held until some other timeout.
    expect(allAt - killedAt).toBeLessThan(16_000);
  }, 90_000);

  it("a worker SIGSTOPped past the slot lease waits for a slot after SIGCONT: never more than LINK_MAX_TRANSFERS in transfer", async () => {
    const c = fx.spawnWorker("C");
    await c.started();
    await fx.waitFor(async () => (await heldBy(b)) === MAX || undefined, 30_000, "B holding every slot", 100);
    expect(await heldBy(c)).toBe(0);

    b.signal("SIGSTOP");
    await fx.waitFor(async () => (await heldBy(c)) === MAX || undefined, 30_000, "C taking the stopped worker's slots", 100);
    b.signal("SIGCONT");
    // Bytes that passed B's gate before it was stopped (a chunk or two in its write buffers)
    // land as soon as it runs again: not a transfer going on. Seen once in CI as a 5th file
    // growing in the first window. Looked at after they landed; a transfer that really went on
    // would grow through every window below. B runs again once it logs that its slots lapsed
    // (its transfers then wait for one: C holds them all); a fixed pause alone assumed B was
    // scheduled within it on a loaded machine.
    await fx
      .waitFor(async () => b.logs.some((l: LogLine) => typeof l.msg === "string" && l.msg.startsWith("a transfer's slot lapsed")) || undefined, 10_000, "B noticing its slots lapsed", 50)
      .catch(() => undefined);
    await new Promise((r) => setTimeout(r, 500));
    await growing();
    const windows: Array<{ growing: number; slots: Record<string, number> }> = [];
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 1_500));
      const h = await holders();
      windows.push({ growing: await growing(), slots: { B: h.get(String(b.child.pid)) ?? 0, C: h.get(String(c.child.pid)) ?? 0 } });
    }
    process.stdout.write(`after SIGCONT, per 1.5 s window (LINK_MAX_TRANSFERS=${MAX}): ${JSON.stringify(windows)}\n`);
    expect(Math.max(...windows.map((w) => w.growing))).toBeLessThanOrEqual(MAX);
  }, 90_000);
});
