import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

/**
 * The compiled scheduler and worker apps as real processes for a chaos run: each one's JSON
 * log goes to a file (and its last lines stay in memory for failure messages); a killed
 * worker can be started again under the same name, as a process manager would.
 */
const REPO = join(__dirname, "..", "..", "..", "..");
export const APP_MAIN = {
  scheduler: join(REPO, "apps", "scheduler", "dist", "main.js"),
  worker: join(REPO, "apps", "worker", "dist", "main.js"),
} as const;

export interface AppProcess {
  name: string;
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Log lines (parsed JSON) whose msg matched one of the watched messages. */
  seen: Map<string, number>;
  tail: string[];
}

/** Messages counted per process, to tell which recovery path acted. */
export const WATCHED_MESSAGES = [
  "Redis lost the fleet's state (epoch key gone): re-deriving jobs from PostgreSQL",
  "recovered orphaned work (owner stopped heartbeating)",
  "database unavailable: job delayed, no attempt used",
  "job delayed",
  "job failed",
  "range claimed",
  "temp sweep finished",
  "waiting for dependencies",
];

export function startApp(kind: keyof typeof APP_MAIN, name: string, env: Record<string, string>, logDir: string): AppProcess {
  const child = spawn(process.execPath, [APP_MAIN[kind]], { env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const file = createWriteStream(join(logDir, `${name}.log`), { flags: "a" });
  const seen = new Map<string, number>();
  const tail: string[] = [];
  const onLine = (text: string) => {
    file.write(`${text}\n`);
    tail.push(text);
    if (tail.length > 50) tail.shift();
    const msg = /"msg":"([^"]*)"/.exec(text)?.[1];
    if (msg && WATCHED_MESSAGES.includes(msg)) seen.set(msg, (seen.get(msg) ?? 0) + 1);
  };
  createInterface({ input: child.stdout! }).on("line", onLine);
  createInterface({ input: child.stderr! }).on("line", onLine);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      file.end();
      resolve({ code, signal });
    }),
  );
  return { name, child, exited, seen, tail };
}

export async function killApp(app: AppProcess, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  if (app.child.exitCode === null && app.child.signalCode === null) app.child.kill(signal);
  await app.exited;
}
