import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
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
  const port = await freePort();
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
  const output: string[] = [];
  createInterface({ input: child.stdout! }).on("line", (l) => output.push(l));
  createInterface({ input: child.stderr! }).on("line", (l) => output.push(l));
  const url = `http://127.0.0.1:${port}`;
  const get = async (path: string, as: "viewer" | "token" = "viewer") => {
    const authorization = as === "token" ? `Bearer ${token}` : `Basic ${Buffer.from(`ops:${password}`).toString("base64")}`;
    const res = await fetch(`${url}${path}`, { headers: { authorization } });
    return { status: res.status, text: await res.text() };
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`dashboard exited with ${child.exitCode}:\n${output.join("\n")}`);
    try {
      if ((await fetch(`${url}/readyz`)).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`dashboard not ready within 20 s:\n${output.join("\n")}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, get, stop: () => stop(child) };
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
