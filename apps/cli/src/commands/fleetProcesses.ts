import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";

/** Runs the compiled scheduler/worker apps as child processes (demo, benchmark). */
export type FleetApp = "scheduler" | "worker";

export function appEntry(app: FleetApp): string {
  // apps/cli/dist/commands → apps/<app>/dist/main.js
  return resolve(__dirname, "../../..", app, "dist", "main.js");
}

export interface FleetProcess {
  name: string;
  child: ChildProcess;
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  stop(graceMs?: number): Promise<number | null>;
}

export function startFleetProcess(app: FleetApp, name: string, env: NodeJS.ProcessEnv, logFile: string): FleetProcess {
  mkdirSync(dirname(logFile), { recursive: true });
  const out = createWriteStream(logFile, { flags: "a" });
  const child = spawn(process.execPath, [appEntry(app)], { env, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.pipe(out);
  child.stderr?.pipe(out);
  const exited = new Promise<number | null>((res) => child.once("exit", (code) => res(code)));
  return {
    name,
    child,
    exited,
    async stop(graceMs = 30_000) {
      if (child.exitCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
