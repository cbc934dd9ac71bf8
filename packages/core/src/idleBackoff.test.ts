import { getEventListeners } from "node:events";
import { ConfigError } from "./errors";
import { DEFAULT_IDLE_STEPS_MS, IdleBackoff, abortableSleep, runPoller } from "./idleBackoff";

describe("IdleBackoff", () => {
  it("climbs 30 s → 5 m → 10 m → 30 m → 60 m by default and stays at 60 m", () => {
    const backoff = new IdleBackoff();
    const delays = Array.from({ length: 7 }, () => backoff.next(false));
    expect(delays).toEqual([30_000, 300_000, 600_000, 1_800_000, 3_600_000, 3_600_000, 3_600_000]);
    expect(DEFAULT_IDLE_STEPS_MS).toEqual(delays.slice(0, 5));
  });

  it("snaps back to the first step as soon as work is found", () => {
    const backoff = new IdleBackoff([5, 10, 20]);
    expect([false, false, false, false].map((found) => backoff.next(found))).toEqual([5, 10, 20, 20]);
    expect(backoff.idleFor).toBe(55);
    expect(backoff.next(true)).toBe(0);
    expect(backoff.idleFor).toBe(0);
    expect([false, false, true, true, false].map((found) => backoff.next(found))).toEqual([5, 10, 0, 0, 5]);
  });

  it("starts over after reset()", () => {
    const backoff = new IdleBackoff([5, 10, 20]);
    backoff.next(false);
    backoff.next(false);
    backoff.reset();
    expect(backoff.idleFor).toBe(0);
    expect(backoff.next(false)).toBe(5);
  });

  it("does not follow later changes to the steps array", () => {
    const steps = [5, 10];
    const backoff = new IdleBackoff(steps);
    steps[0] = 1_000;
    expect(backoff.next(false)).toBe(5);
  });

  it.each([[[]], [[5, -1]], [[Number.NaN]]])("rejects steps %p", (steps) => {
    expect(() => new IdleBackoff(steps)).toThrow(ConfigError);
  });
});

/** A poll that answers from a script and aborts the controller when the script runs out. */
function scriptedPoll(controller: AbortController, answers: Array<boolean | Error>) {
  const calls: number[] = [];
  const poll = async () => {
    calls.push(calls.length);
    const answer = answers[calls.length - 1];
    if (calls.length >= answers.length) controller.abort();
    if (answer instanceof Error) throw answer;
    return answer ?? false;
  };
  return { poll, calls };
}

describe("runPoller", () => {
  it("sleeps by the ladder between empty polls and polls again at once after work", async () => {
    const controller = new AbortController();
    const { poll, calls } = scriptedPoll(controller, [false, false, false, true, true, false, false]);
    const slept: number[] = [];
    await runPoller({
      poll,
      signal: controller.signal,
      backoff: new IdleBackoff([5, 10, 20]),
      sleep: async (ms) => {
        slept.push(ms);
      },
    });
    expect(calls).toHaveLength(7);
    // The last poll is followed by no sleep: the script aborted during it.
    expect(slept).toEqual([5, 10, 20, 5]);
  });

  it("reports a poll that throws and treats it as no work", async () => {
    const controller = new AbortController();
    const failure = new Error("database went away");
    const { poll } = scriptedPoll(controller, [true, failure, false, false]);
    const errors: unknown[] = [];
    const slept: number[] = [];
    await runPoller({
      poll,
      signal: controller.signal,
      backoff: new IdleBackoff([5, 10, 20]),
      onError: (err) => errors.push(err),
      sleep: async (ms) => {
        slept.push(ms);
      },
    });
    expect(errors).toEqual([failure]);
    expect(slept).toEqual([5, 10]);
  });

  it("runs with the real sleep and stops promptly when aborted mid-sleep", async () => {
    const controller = new AbortController();
    const pollTimes: number[] = [];
    const stopped = runPoller({
      poll: async () => {
        pollTimes.push(Date.now());
        return false;
      },
      signal: controller.signal,
      backoff: new IdleBackoff([5, 10, 60_000]),
    });
    while (pollTimes.length < 3) await abortableSleep(2, new AbortController().signal);
    const abortedAt = Date.now();
    controller.abort();
    await stopped;
    expect(Date.now() - abortedAt).toBeLessThan(500);
    expect(pollTimes).toHaveLength(3);
    expect((pollTimes[1] ?? 0) - (pollTimes[0] ?? 0)).toBeGreaterThanOrEqual(4);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });

  it("does not starve the event loop when every poll finds work", async () => {
    const controller = new AbortController();
    let polls = 0;
    setTimeout(() => controller.abort(), 20);
    await runPoller({
      poll: async () => {
        polls++;
        return true;
      },
      signal: controller.signal,
      backoff: new IdleBackoff([5, 10, 20]),
    });
    expect(polls).toBeGreaterThan(1);
  });

  it("awaits the poll in flight and ignores the error it throws on abort", async () => {
    const controller = new AbortController();
    const errors: unknown[] = [];
    let settled = false;
    const stopped = runPoller({
      poll: (signal) =>
        new Promise<boolean>((_, reject) => {
          signal.addEventListener("abort", () => setTimeout(() => reject(new Error("aborted")), 10));
        }).finally(() => {
          settled = true;
        }),
      signal: controller.signal,
      backoff: new IdleBackoff([5, 10, 20]),
      onError: (err) => errors.push(err),
    });
    setTimeout(() => controller.abort(), 5);
    await stopped;
    expect(settled).toBe(true);
    expect(errors).toEqual([]);
  });

  it("does not poll at all when the signal is already aborted", async () => {
    const poll = jest.fn(async () => true);
    await runPoller({ poll, signal: AbortSignal.abort(), backoff: new IdleBackoff([5]) });
    expect(poll).not.toHaveBeenCalled();
  });
});

describe("abortableSleep", () => {
  afterEach(() => jest.useRealTimers());

  it("resolves after the delay and removes its abort listener", async () => {
    jest.useFakeTimers();
    const controller = new AbortController();
    let done = false;
    const sleeping = abortableSleep(1_000, controller.signal).then(() => (done = true));
    await jest.advanceTimersByTimeAsync(999);
    expect(done).toBe(false);
    await jest.advanceTimersByTimeAsync(1);
    await sleeping;
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });

  it("resolves at once on abort and leaves no timer behind", async () => {
    jest.useFakeTimers();
    const controller = new AbortController();
    const sleeping = abortableSleep(3_600_000, controller.signal);
    expect(jest.getTimerCount()).toBe(1);
    controller.abort();
    await sleeping;
    expect(jest.getTimerCount()).toBe(0);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });

  it("resolves immediately for an already-aborted signal", async () => {
    jest.useFakeTimers();
    await abortableSleep(3_600_000, AbortSignal.abort());
    expect(jest.getTimerCount()).toBe(0);
  });
});
