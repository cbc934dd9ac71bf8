import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";

/**
 * The compiled scheduler app (apps/scheduler/dist/main.js) as a process of a test: its output
 * kept line by line (JSON lines parsed) so a test can wait for a log line. Shared by the tests
 * that run replicas, bad config and catch-up against real processes.
 */

/** The compiled scheduler app. */
export const SCHEDULER_MAIN = join(__dirname, "..", "dist", "main.js");

/** A scheduler process started by startScheduler. */
export interface SchedulerProcess {
  child: ChildProcess;
  /** Every line of stdout and stderr so far. */
  output: string[];
  /** The JSON lines among them, parsed. */
  lines: Array<Record<string, unknown>>;
  /** The exit code once it exits. */
  exited: Promise<number | null>;
  /** The first line matching `match`, waiting up to `ms` (20 s) for it; the error names `what` and the last output. */
  line(match: (l: Record<string, unknown>) => boolean, what: string, ms?: number): Promise<Record<string, unknown>>;
}

/** Starts the compiled scheduler with PATH and `env` only, in `cwd` (default: this process's). */
export function startScheduler(env: Record<string, string>, cwd?: string): SchedulerProcess {
  const child = spawn(process.execPath, [SCHEDULER_MAIN], { cwd, env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const output: string[] = [];
  const lines: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on("line", (text) => {
      output.push(text);
      try {
        lines.push(JSON.parse(text) as Record<string, unknown>);
      } catch {
        // Plain text (config errors on stderr) stays in output only.
      }
      for (const w of waiters) w();
    });
  }
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    child,
    output,
    lines,
    exited,
    line(match, what, ms = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find(match);
          if (found) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no ${what} within ${ms} ms:\n${output.slice(-20).join("\n")}`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
  };
}

/** SIGKILLs those of `procs` still running and waits for every one to exit. */
export async function stopAll(procs: SchedulerProcess[]): Promise<void> {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  await Promise.all(procs.map((p) => p.exited));
}
