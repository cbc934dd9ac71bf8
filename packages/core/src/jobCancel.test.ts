import { getMaxListeners } from "node:events";
import { CANCEL_REASON, JobSignals } from "./jobCancel";

describe("JobSignals (the runner's abort signals, made on first use)", () => {
  it("cancels a running job whose handler already holds its signal", () => {
    const signals = new JobSignals();
    const run = signals.track("work", "1");
    const signal = run.signal;
    expect(signal.aborted).toBe(false);
    expect(signals.cancel("work", "1", CANCEL_REASON)).toBe(true);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe(CANCEL_REASON);
    expect(run.reason).toBe(CANCEL_REASON);
    // The same signal every time; a second cancel changes nothing.
    expect(run.signal).toBe(signal);
    expect(signals.cancel("work", "1", "shutdown")).toBe(false);
    expect(signal.reason).toBe(CANCEL_REASON);
  });

  it("remembers a cancel that comes before the handler reads the signal: it starts out aborted", () => {
    const signals = new JobSignals();
    const run = signals.track("work", "2");
    expect(signals.cancel("work", "2", CANCEL_REASON)).toBe(true);
    expect(run.reason).toBe(CANCEL_REASON);
    expect(run.signal.aborted).toBe(true);
    expect(run.signal.reason).toBe(CANCEL_REASON);
  });

  it("cancels only the named job of the named queue, and forgets a job once its run is done", () => {
    const signals = new JobSignals();
    const a = signals.track("work", "3");
    const b = signals.track("other", "3");
    expect(signals.cancel("work", "4", CANCEL_REASON)).toBe(false);
    expect(signals.cancel("other", "3", CANCEL_REASON)).toBe(true);
    expect(a.signal.aborted).toBe(false);
    expect(b.signal.aborted).toBe(true);
    a.done();
    expect(signals.cancel("work", "3", CANCEL_REASON)).toBe(false);
    // A run of the same id taken again (redelivered) is a new entry; the old run's done() leaves it.
    const again = signals.track("other", "3");
    b.done();
    expect(signals.cancel("other", "3", CANCEL_REASON)).toBe(true);
    expect(again.signal.aborted).toBe(true);
  });

  it("aborts every running job on shutdown; one signal may have many listeners (every copy in flight listens)", () => {
    const signals = new JobSignals();
    const runs = ["5", "6", "7"].map((id) => signals.track("work", id));
    expect(getMaxListeners(runs[0]!.signal)).toBeGreaterThanOrEqual(1_000);
    signals.abortAll("shutdown");
    expect(runs.map((r) => [r.reason, r.signal.aborted])).toEqual([["shutdown", true], ["shutdown", true], ["shutdown", true]]);
  });
});
