import { spawn } from "node:child_process";
import { elapsedSeconds } from "./say";

export interface TimedCommandResult {
  seconds: number;
  /** The tail of stderr, for an error message. */
  stderr: string;
  /** CPU (user + system) the command and its children used, seconds; undefined off Linux. */
  cpuSeconds?: number;
}

// The command runs under a shell that, once it has reaped it, reports its own children's CPU
// time (cutime + cstime of /proc/<shell>/stat) on descriptor 3.
const CPU_WRAPPER = '"$@"; rc=$?; cat /proc/$$/stat >&3 2>/dev/null; exit $rc';

/** Runs a command to completion and times it; rejects on a non-zero exit with its stderr. */
export function runTimed(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<TimedCommandResult> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn("/bin/sh", ["-c", CPU_WRAPPER, "sh", command, ...args], { env, stdio: ["ignore", "ignore", "pipe", "pipe"] });
    let stderr = "";
    let stat = "";
    (child.stdio[3] as NodeJS.ReadableStream).on("data", (chunk: Buffer) => void (stat += chunk.toString("utf8")));
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString("utf8")).slice(-4_000);
    });
    child.once("error", reject);
    child.once("close", (code, signal) => {
      const seconds = elapsedSeconds(started);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const cpuSeconds = f.length > 14 ? (Number(f[13]) + Number(f[14])) / 100 : undefined;
      if (code === 0) resolve({ seconds, stderr, ...(cpuSeconds !== undefined ? { cpuSeconds } : {}) });
      else reject(new Error(`${command} ${args.join(" ")} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`));
    });
  });
}
