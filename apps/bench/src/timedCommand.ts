import { spawn } from "node:child_process";
import { elapsedSeconds } from "./say";

export interface TimedCommandResult {
  seconds: number;
  /** The tail of stderr, for an error message. */
  stderr: string;
}

/** Runs a command to completion and times it; rejects on a non-zero exit with its stderr. */
export function runTimed(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<TimedCommandResult> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(command, args, { env, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString("utf8")).slice(-4_000);
    });
    child.once("error", reject);
    child.once("close", (code, signal) => {
      const seconds = elapsedSeconds(started);
      if (code === 0) resolve({ seconds, stderr });
      else reject(new Error(`${command} ${args.join(" ")} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`));
    });
  });
}
