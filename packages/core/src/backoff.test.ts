import { Queue, Worker } from "bullmq";
import { ConfigError } from "./errors";
import {
  DEFAULT_BACKOFF_SCHEDULE_MS,
  FLEET_BACKOFF_TYPE,
  backoffDelay,
  fleetBackoffStrategy,
  parseDuration,
  parseDurationList,
} from "./backoff";

/** mulberry32: a small deterministic PRNG so jitter tests are reproducible. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function issuesOf(run: () => unknown): readonly string[] {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues;
  }
  throw new Error("expected a ConfigError");
}

describe("parseDuration", () => {
  it.each([
    ["500ms", 500],
    ["90s", 90_000],
    ["5m", 300_000],
    ["2h", 7_200_000],
    ["1.5h", 5_400_000],
    ["250", 250],
    [" 30 S ", 30_000],
    ["0s", 0],
  ])("parses %j as %d ms", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it("accepts days, for retention periods", () => {
    expect(parseDuration("14d")).toBe(14 * 86_400_000);
  });

  it.each(["", "abc", "-5s", "5 minutes", "1e3", "s", "5m30s"])("rejects %j with a ConfigError", (text) => {
    expect(issuesOf(() => parseDuration(text))).toEqual([expect.stringContaining(`"${text}" is not a duration`)]);
  });
});

describe("parseDurationList", () => {
  it("parses the default schedule's spelling", () => {
    expect(parseDurationList("30s,5m,10m,30m,60m")).toEqual(DEFAULT_BACKOFF_SCHEDULE_MS);
    expect(parseDurationList(" 1s , 2s ")).toEqual([1_000, 2_000]);
  });

  it("names every bad entry", () => {
    const issues = issuesOf(() => parseDurationList("30s,soon,5m,,7x"));
    expect(issues).toHaveLength(3);
    expect(issues.join("\n")).toMatch(/"soon"[\s\S]*""[\s\S]*"7x"/);
  });

  it("rejects an empty list", () => {
    expect(issuesOf(() => parseDurationList("  "))).toEqual([expect.stringContaining("empty duration list")]);
  });
});

describe("backoffDelay", () => {
  const schedule = [1_000, 5_000, 20_000];

  it("uses schedule[0] after the first failure and repeats the last step", () => {
    expect([1, 2, 3, 4, 10].map((attempts) => backoffDelay(attempts, schedule, 0))).toEqual([
      1_000, 5_000, 20_000, 20_000, 20_000,
    ]);
  });

  it("treats a nonsensical attempt count as the first failure", () => {
    expect(backoffDelay(0, schedule, 0)).toBe(1_000);
    expect(backoffDelay(-3, schedule, 0)).toBe(1_000);
  });

  it("spreads the delay over ±jitter at the extremes of the random value", () => {
    expect(backoffDelay(2, schedule, 0.2, () => 0)).toBe(4_000);
    expect(backoffDelay(2, schedule, 0.2, () => 0.5)).toBe(5_000);
    expect(backoffDelay(2, schedule, 0.2, () => 0.999_999)).toBe(6_000);
  });

  it("stays within bounds, whole and roughly uniform with a seeded random", () => {
    const random = seededRandom(42);
    const delays = Array.from({ length: 2_000 }, () => backoffDelay(3, schedule, 0.25, random));
    expect(delays.every((ms) => Number.isInteger(ms) && ms >= 15_000 && ms <= 25_000)).toBe(true);
    const below = delays.filter((ms) => ms < 20_000).length;
    expect(below).toBeGreaterThan(900);
    expect(below).toBeLessThan(1_100);
    expect(backoffDelay(3, schedule, 0.25, seededRandom(42))).toBe(delays[0]);
  });

  it("clamps jitter outside 0..1 and never goes negative", () => {
    expect(backoffDelay(1, schedule, 5, () => 0)).toBe(0);
    expect(backoffDelay(1, schedule, -1, () => 0)).toBe(1_000);
    expect(backoffDelay(1, schedule, Number.NaN, () => 0)).toBe(1_000);
  });

  it("rounds fractional schedule values to whole milliseconds", () => {
    expect(backoffDelay(1, [1_000.4], 0.1, () => 0.3)).toBe(960);
  });
});

describe("fleetBackoffStrategy", () => {
  it("applies jitter for the fleet type and the plain schedule for other types", () => {
    const strategy = fleetBackoffStrategy([1_000, 2_000], 0.5, () => 0);
    expect(strategy(1, FLEET_BACKOFF_TYPE, new Error("boom"), {})).toBe(500);
    expect(strategy(5, FLEET_BACKOFF_TYPE, undefined, undefined)).toBe(1_000);
    expect(strategy(1, "custom", undefined, undefined)).toBe(1_000);
    expect(strategy(5, undefined, undefined, undefined)).toBe(2_000);
  });

  it("matches a seeded backoffDelay sequence", () => {
    const strategy = fleetBackoffStrategy(DEFAULT_BACKOFF_SCHEDULE_MS, 0.2, seededRandom(7));
    const random = seededRandom(7);
    for (let attempts = 1; attempts <= 8; attempts++) {
      expect(strategy(attempts, "fleet")).toBe(backoffDelay(attempts, DEFAULT_BACKOFF_SCHEDULE_MS, 0.2, random));
    }
  });

  it("does not follow later changes to the schedule array it was given", () => {
    const schedule = [1_000];
    const strategy = fleetBackoffStrategy(schedule, 0);
    schedule[0] = 9_000;
    expect(strategy(1, "fleet")).toBe(1_000);
  });

  it("rejects an empty schedule, negative steps and jitter outside 0..1 at creation", () => {
    expect(issuesOf(() => fleetBackoffStrategy([], 0))).toEqual(["backoff schedule is empty"]);
    expect(issuesOf(() => fleetBackoffStrategy([1_000, -1], 1.5))).toHaveLength(2);
    expect(issuesOf(() => fleetBackoffStrategy([1_000], Number.NaN))).toHaveLength(1);
  });

  it("sets the gaps between real BullMQ retries for jobs with backoff type fleet", async () => {
    // Real Redis on loopback (the machine's service), with a prefix of our own, removed after.
    const connection = { host: "127.0.0.1", port: 6379, maxRetriesPerRequest: null };
    const prefix = `test-backoff-${process.pid}-${Date.now()}`;
    const queue = new Queue("retries", { connection, prefix });
    const startedAt: number[] = [];
    const worker = new Worker(
      "retries",
      async () => {
        startedAt.push(Date.now());
        throw new Error("still failing");
      },
      // Steps far apart (10×), so each gap's window has seconds of slack for a delayed job's
      // promotion on a loaded machine, yet tells the two steps apart.
      { connection, prefix, settings: { backoffStrategy: fleetBackoffStrategy([300, 3_000], 0) } },
    );
    try {
      const finalFailure = new Promise<void>((resolve) => {
        worker.on("failed", (job) => {
          if (job && job.attemptsMade >= 3) resolve();
        });
      });
      await queue.add("flaky", {}, { attempts: 3, backoff: { type: FLEET_BACKOFF_TYPE } });
      await finalFailure;
      const [first = 0, second = 0, third = 0] = startedAt;
      expect(startedAt).toHaveLength(3);
      // First retry after schedule[0] (not at once, not schedule[1])...
      expect(second - first).toBeGreaterThanOrEqual(300);
      expect(second - first).toBeLessThan(3_000);
      // ...the second after schedule[1] (not schedule[0] again, nor twice schedule[1]).
      expect(third - second).toBeGreaterThanOrEqual(3_000);
      expect(third - second).toBeLessThan(6_000);
    } finally {
      await worker.close();
      await queue.obliterate({ force: true });
      await queue.close();
    }
  });
});
