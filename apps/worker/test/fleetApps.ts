import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, readdir, readlink } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { freePort } from "@fleet/testing/freePort";

/**
 * The other compiled apps next to real workers, the way an operator uses them during an
 * outage: `fleet migrate status`, and a dashboard process (its pages and /metrics).
 */

const REPO = join(__dirname, "..", "..", "..");
const CLI = join(REPO, "apps", "cli", "dist", "main.js");
const DASHBOARD = join(REPO, "apps", "dashboard", "dist", "main.js");
const HASH_PASSWORD = join(REPO, "apps", "dashboard", "dist", "hashPassword.js");
const run = promisify(execFile);

function assertBuilt(file: string): void {
  if (!existsSync(file)) throw new Error(`${file} is missing: run \`npm run build\` first`);
}

/** `fleet <args>` with the fleet's environment; stdout parsed when `--json` is among the args. */
export async function runCli(env: Record<string, string>, args: string[]): Promise<{ stdout: string; json?: unknown }> {
  assertBuilt(CLI);
  const { stdout } = await run(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? "", ...env }, timeout: 30_000 });
  return { stdout, ...(args.includes("--json") ? { json: JSON.parse(stdout) as unknown } : {}) };
}

export interface DashboardProcess {
  url: string;
  /** GET with HTTP basic auth of a viewer (pages, .json) or the API token (`/metrics`). */
  get(path: string, as?: "viewer" | "token"): Promise<{ status: number; text: string }>;
  stop(): Promise<void>;
}

/** A dashboard process on a free loopback port, with one viewer and one API token. */
export async function startDashboardProcess(env: Record<string, string>): Promise<DashboardProcess> {
  assertBuilt(DASHBOARD);
  const password = randomBytes(12).toString("hex");
  const hash = await hashPassword(password);
  const token = randomBytes(24).toString("hex");
  const launch = async (port: number, output: string[]): Promise<ChildProcess> => {
    const child = spawn(process.execPath, [DASHBOARD], {
      env: {
        PATH: process.env.PATH ?? "",
        ...env,
        DASHBOARD_PORT: String(port),
        DASHBOARD_HOST: "127.0.0.1",
        DASHBOARD_USERS: `ops:viewer:${hash}`,
        DASHBOARD_SESSION_SECRET: randomBytes(32).toString("hex"),
        DASHBOARD_API_TOKENS: `scraper:metrics:${token}`,
        LOG_FORMAT: "json",
        LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
    createInterface({ input: child.stdout! }).on("line", (l) => output.push(l));
    createInterface({ input: child.stderr! }).on("line", (l) => output.push(l));
    try {
      const deadline = Date.now() + 20_000;
      for (;;) {
        if (child.exitCode !== null || child.signalCode !== null) {
          await closed; // all of its output read
          throw new Error(`dashboard exited with ${child.exitCode ?? child.signalCode}:\n${output.join("\n")}`);
        }
        try {
          // Our dashboard, not another server that holds the port (ours then exits: EADDRINUSE).
          if ((await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200 && (await listensOn(child.pid!, port))) return child;
        } catch {
          // not listening yet
        }
        if (Date.now() > deadline) throw new Error(`dashboard not ready within 20 s:\n${output.join("\n")}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    } catch (err) {
      await stop(child);
      throw err;
    }
  };
  // The port was free a moment ago; if someone took it meanwhile, pick another.
  let child: ChildProcess;
  let port: number;
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    const output: string[] = [];
    try {
      child = await launch(port, output);
      break;
    } catch (err) {
      if (attempt >= 3 || !output.some((line) => line.includes("EADDRINUSE"))) throw err;
    }
  }
  const url = `http://127.0.0.1:${port}`;
  const get = async (path: string, as: "viewer" | "token" = "viewer") => {
    const authorization = as === "token" ? `Bearer ${token}` : `Basic ${Buffer.from(`ops:${password}`).toString("base64")}`;
    const res = await fetch(`${url}${path}`, { headers: { authorization } });
    return { status: res.status, text: await res.text() };
  };
  return { url, get, stop: () => stop(child) };
}

/** Whether process `pid` holds a TCP socket listening on `port` (Linux /proc; true where there is none). */
async function listensOn(pid: number, port: number): Promise<boolean> {
  let table: string;
  try {
    table = (await readFile("/proc/net/tcp", "utf8")) + (await readFile("/proc/net/tcp6", "utf8").catch(() => ""));
  } catch {
    return true;
  }
  // "sl local_address rem_address st … inode": local ADDR:PORT in hex, state 0A is LISTEN.
  const suffix = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const inodes = new Set<string>();
  for (const line of table.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields[1]?.endsWith(suffix) && fields[3] === "0A" && fields[9]) inodes.add(fields[9]);
  }
  if (inodes.size === 0) return false;
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  for (const fd of fds) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
    const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
    if (inode !== undefined && inodes.has(inode)) return true;
  }
  return false;
}

async function hashPassword(password: string): Promise<string> {
  assertBuilt(HASH_PASSWORD);
  const child = spawn(process.execPath, [HASH_PASSWORD], { stdio: ["pipe", "pipe", "inherit"] });
  child.stdin!.end(password);
  let out = "";
  child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  if (code !== 0) throw new Error(`hashPassword exited with ${code}`);
  return out.trim();
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}
