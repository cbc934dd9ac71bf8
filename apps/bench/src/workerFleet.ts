import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdir, readFile, rm } from "node:fs/promises";
import { resolve } from "node:path";
import { appEntry } from "@fleet/cli/commands/fleetProcesses";

/**
 * N compiled worker processes, started the way the demo starts them, plus what the benchmark
 * needs around them: waiting until each consumes, and their memory high-water mark.
 */
export interface WorkerProcess {
  name: string;
  child: ChildProcess;
  exited: Promise<number | null>;
}

export interface WorkerFleet {
  processes: WorkerProcess[];
  /** Rejects as soon as any worker exits while the fleet should be running. */
  crashed: Promise<never>;
  /** Samples VmRSS now (VmHWM misses nothing, but this shows the trend during a run). */
  sample(): Promise<void>;
  /** Highest VmHWM / sampled VmRSS of any one worker so far, in MiB. */
  peakRssMb(): Promise<number>;
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 30_000;

export interface WorkerFleetOptions {
  count: number;
  env: NodeJS.ProcessEnv;
  logDir: string;
  /** Names the processes and their log files: `<label>-worker-<n>.log`. */
  label: string;
  /** Node flags of the workers, e.g. ["--cpu-prof"] (not allowed in NODE_OPTIONS). */
  nodeArgs?: readonly string[];
}

export async function startWorkerFleet(options: WorkerFleetOptions): Promise<WorkerFleet> {
  const { logDir } = options;
  const processes: WorkerProcess[] = [];
  const ready: Promise<void>[] = [];
  let stopping = false;
  await mkdir(logDir, { recursive: true });
  for (let i = 1; i <= options.count; i++) {
    const name = `${options.label}-worker-${i}`;
    const logFile = resolve(logDir, `${name}.log`);
    await rm(logFile, { force: true }); // one run per log file
    const p = startWorker(name, options.env, logFile, options.nodeArgs ?? []);
    processes.push(p);
    ready.push(untilReady(p, logFile));
  }
  const crashed = new Promise<never>((_, reject) => {
    for (const p of processes) {
      void p.exited.then((code) => {
        if (!stopping) reject(new Error(`${p.name} exited with code ${code}; see ${resolve(logDir, `${p.name}.log`)}`));
      });
    }
  });
  crashed.catch(() => undefined); // observed by whoever races it; never unhandled
  const peaks = new Map<number, number>();
  const fleet: WorkerFleet = {
    processes,
    crashed,
    async sample() {
      for (const p of processes) {
        const kb = await procStatusKb(p.child.pid, "VmRSS");
        if (kb !== undefined && p.child.pid !== undefined) peaks.set(p.child.pid, Math.max(peaks.get(p.child.pid) ?? 0, kb));
      }
    },
    async peakRssMb() {
      let peak = 0;
      for (const p of processes) {
        const hwm = (await procStatusKb(p.child.pid, "VmHWM")) ?? 0;
        peak = Math.max(peak, hwm, peaks.get(p.child.pid ?? -1) ?? 0);
      }
      return peak / 1024;
    },
    async stop() {
      stopping = true;
      await Promise.all(processes.map((p) => stopWorker(p, 15_000)));
    },
  };
  try {
    await Promise.race([Promise.all(ready), crashed]);
  } catch (err) {
    await fleet.stop();
    throw err;
  }
  return fleet;
}

// Like the demo's startFleetProcess, plus node flags.
function startWorker(name: string, env: NodeJS.ProcessEnv, logFile: string, nodeArgs: readonly string[]): WorkerProcess {
  const out = createWriteStream(logFile);
  const child = spawn(process.execPath, [...nodeArgs, appEntry("worker")], { env, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.pipe(out);
  child.stderr?.pipe(out);
  const exited = new Promise<number | null>((res) => child.once("exit", (code) => res(code)));
  return { name, child, exited };
}

/** SIGTERM (a graceful shutdown, which also writes a --cpu-prof profile), SIGKILL after `graceMs`. */
async function stopWorker(p: WorkerProcess, graceMs: number): Promise<number | null> {
  if (p.child.exitCode !== null) return p.child.exitCode;
  p.child.kill("SIGTERM");
  const timer = setTimeout(() => p.child.kill("SIGKILL"), graceMs);
  const code = await p.exited;
  clearTimeout(timer);
  return code;
}

/** Resolves on the worker's "worker started" log line (it consumes from then on). */
function untilReady(p: WorkerProcess, logFile: string): Promise<void> {
  return new Promise((res, rej) => {
    let seen = "";
    const timer = setTimeout(() => rej(new Error(`${p.name} did not start within ${READY_TIMEOUT_MS / 1000} s; see ${logFile}`)), READY_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      // Keep a tail only: the line may arrive split across chunks.
      seen = (seen + chunk.toString("utf8")).slice(-4_096);
      if (seen.includes('"worker started"')) {
        clearTimeout(timer);
        p.child.stdout?.off("data", onData);
        res();
      }
    };
    p.child.stdout?.on("data", onData);
    void p.exited.then(() => clearTimeout(timer));
  });
}

/** A `Vm…: N kB` field of /proc/<pid>/status; undefined once the process is gone (or off Linux). */
async function procStatusKb(pid: number | undefined, field: string): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}
