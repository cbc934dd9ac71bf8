import { randomBytes } from "node:crypto";
import { mkdir, readdir, rm, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { runCli } from "./fleetApps";
import { createWorkerFixture } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * LINK_BWLIMIT across three worker processes at a low limit (a WAN link: 256 KiB/s), measured
 * as bytes at the destination from the first byte on, then a live change to 1 MiB/s. Found by
 * review: the bucket's burst had a 4 MiB floor, 16 s worth of the limit at 256 KiB/s, sent at
 * once whenever the link started or had been idle (597 KiB/s over the first 12 s).
 */

const MiB = 1024 * 1024;
const FILE_BYTES = 2 * MiB;
const LOW = 256 * 1024;
const WINDOW_MS = 12_000;

describe("LINK_BWLIMIT at a low limit, three worker processes", () => {
  let fx: WorkerFixture;
  let dest: string;

  beforeAll(async () => {
    dest = join("/dev/shm", `fleet-bw-${randomBytes(4).toString("hex")}`);
    await mkdir(dest, { recursive: true });
    fx = await createWorkerFixture("link-bw", {
      SOURCE_URL: `null:zero?size=${FILE_BYTES}`,
      DESTINATION_URL: dest,
      VERIFY: "write",
      BATCH_SIZE: "20",
      COPY_CONCURRENCY: "4",
      WORKER_CONCURRENCY: "migration=1,maintenance=1,remote=1",
      LINK_BWLIMIT: "256K",
      LOG_LEVEL: "info",
    });
  });
  afterAll(async () => {
    await fx?.close();
    await rm(dest, { recursive: true, force: true });
  });

  it("the fleet moves about 256 KiB/s (±25 %) in its first 12 s, then about 1 MiB/s after a live change", async () => {
    await fx.runtime.db.query(`INSERT INTO source_files (uri, name, size) SELECT 'f-' || i || '.bin', 'f-' || i || '.bin', $1 FROM generate_series(1, 300) AS i`, [FILE_BYTES]);
    const workers = ["A", "B", "C"].map((n) => fx.spawnWorker(n));
    await Promise.all(workers.map((w) => w.started()));

    let finished = 0;
    const samples: Array<{ at: number; bytes: number }> = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        let partial = 0;
        for (const name of await readdir(dest)) {
          const path = join(dest, name);
          const size = await stat(path).then((s) => s.size, () => 0);
          if (name.endsWith(".tmp")) partial += size;
          else if (size === FILE_BYTES) {
            finished += size;
            await unlink(path).catch(() => undefined);
          }
        }
        samples.push({ at: Date.now(), bytes: finished + partial });
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const bytesAt = (t: number) => (samples.find((x) => x.at >= t) ?? samples.at(-1)!).bytes;
    const rate = (t0: number, t1: number) => (bytesAt(t1) - bytesAt(t0)) / ((t1 - t0) / 1000);
    try {
      await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
      const first = await fx.waitFor(async () => samples.find((s) => s.bytes > 0)?.at, 30_000, "the first bytes");
      await new Promise((r) => setTimeout(r, WINDOW_MS + 300 - (Date.now() - first)));
      // From just before the first byte: everything the fleet moved in its first WINDOW_MS.
      const low = (bytesAt(first + WINDOW_MS) - 0) / (WINDOW_MS / 1000);

      await runCli(fx.env, ["settings", "set", "LINK_BWLIMIT", "1M", "--by", "test", "--json"]);
      const changed = Date.now();
      // SETTINGS_REFRESH (2 s) plus the debt of the old rate paid at the new one: measure from +4 s.
      await new Promise((r) => setTimeout(r, 4_000 + 10_000 + 300));
      const high = rate(changed + 4_000, changed + 14_000);
      process.stdout.write(
        `LINK_BWLIMIT 256K, 3 workers: ${(low / 1024).toFixed(0)} KiB/s over the first ${WINDOW_MS / 1000} s (${(bytesAt(first + WINDOW_MS) / MiB).toFixed(1)} MiB; limit allows ${((LOW * WINDOW_MS) / 1000 / MiB).toFixed(1)} MiB); ` +
          `after live change to 1M: ${(high / 1024).toFixed(0)} KiB/s\n`,
      );
      expect(high).toBeGreaterThan(0.75 * MiB);
      expect(high).toBeLessThan(1.25 * MiB);
      expect(low).toBeLessThan(1.25 * LOW);
    } finally {
      sampling = false;
      await sampler;
    }
  }, 120_000);
});
