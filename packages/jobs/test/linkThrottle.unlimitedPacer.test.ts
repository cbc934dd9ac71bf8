import { Writable } from "node:stream";
import { Redis } from "ioredis";
import { parseBandwidthTimetable } from "@fleet/core/bandwidthTimetable";
import type { BandwidthTimetable } from "@fleet/core/bandwidthTimetable";
import { LinkLimits } from "@fleet/core/linkLimits";
import { createLogger } from "@fleet/core/logger";
import { testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { LinkThrottle } from "../src/migration/linkThrottle";

/**
 * With LINK_MAX_TRANSFERS set, every stream gets a pacer (it checks the slot's lease before
 * bytes go out) even when LINK_BWLIMIT is off. Found by review: with no rate, every chunk read
 * the timetable (rateAt in FLEET_TZ, a luxon zone conversion, ~20 µs) and paid a promise. Now
 * an unlimited link's timetable is read every 250 ms, and a chunk that may go at once gets no
 * promise.
 */
describe("per-chunk cost of the slot check when the link has no bandwidth limit now", () => {
  let redis: Redis;
  const log = createLogger({ name: "throttle-chunks", LOG_LEVEL: "error", LOG_FORMAT: "json", destination: new Writable({ write: (_c, _e, cb) => cb() }) });
  beforeAll(() => {
    redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: 1 });
  });
  afterAll(() => redis?.disconnect());

  it("streaming 64 MiB in 64 KiB chunks under LINK_MAX_TRANSFERS=4 and a timetable that is 'off' now reads the timetable a handful of times, not per chunk", async () => {
    const timetable = parseBandwidthTimetable("00:00,off 23:59,off");
    let rateReads = 0;
    const counted: BandwidthTimetable = { text: timetable.text, toString: () => timetable.text, rateAt: (at, tz) => (rateReads++, timetable.rateAt(at, tz)) };
    const throttle = new LinkThrottle({
      limits: new LinkLimits(redis, uniquePrefix("throttle-chunks")),
      link: "local:/src → local:/dst",
      bandwidth: () => counted,
      maxTransfers: () => 4,
      timeZone: "Europe/Berlin",
      owner: "w1",
      log,
    });
    const signal = new AbortController().signal;
    const slot = await throttle.slot(signal);
    try {
      const pacer = throttle.pacer(signal, slot)!;
      rateReads = 0;
      const chunks = 1024; // 64 MiB in fs.createReadStream's 64 KiB chunks
      const started = performance.now();
      let promises = 0;
      for (let i = 0; i < chunks; i++) {
        const waiting = pacer.take(64 * 1024);
        if (waiting) promises++;
        await waiting;
      }
      pacer.done();
      const ms = performance.now() - started;
      process.stdout.write(`timetable read ${rateReads} times for ${chunks} chunks (${ms.toFixed(1)} ms of pacing for an unlimited link)\n`);
      expect(rateReads).toBeLessThanOrEqual(16);
      expect(promises).toBe(0);
    } finally {
      slot.release();
    }
  });

  it("a stream started while the link has no limit is paced once a limit is set (a live change), without a slot too", async () => {
    let timetable = parseBandwidthTimetable("off");
    const throttle = new LinkThrottle({
      limits: new LinkLimits(redis, uniquePrefix("throttle-live")),
      link: "local:/src → local:/dst",
      bandwidth: () => timetable,
      maxTransfers: () => 0,
      timeZone: "UTC",
      owner: "w1",
      log,
    });
    const signal = new AbortController().signal;
    const pacer = throttle.pacer(signal);
    // Unlimited: chunks go at once, no promise.
    for (let i = 0; i < 64; i++) expect(pacer.take(64 * 1024)).toBeUndefined();
    // `fleet settings set LINK_BWLIMIT 1M` while the stream runs (a large file: it used to go
    // out at full speed to its end).
    timetable = parseBandwidthTimetable("1M");
    await new Promise((r) => setTimeout(r, 300)); // past the unlimited stream's recheck (250 ms)
    const started = performance.now();
    for (let i = 0; i < 64; i++) await pacer.take(64 * 1024); // 4 MiB at 1 MiB/s
    pacer.done();
    const seconds = (performance.now() - started) / 1000;
    process.stdout.write(`4 MiB after a live 1M limit: ${seconds.toFixed(2)} s\n`);
    // 4 MiB less the bucket's burst (2 s of the rate) at 1 MiB/s: about 2 s, never at once.
    expect(seconds).toBeGreaterThan(1.5);
  });
});
