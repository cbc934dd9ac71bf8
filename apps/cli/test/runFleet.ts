import { spawn } from "node:child_process";
import type { SpawnOptions } from "node:child_process";
import { join } from "node:path";

/** The compiled `fleet` (tests that spawn it need `npm run build` first). */
export const CLI = join(__dirname, "..", "dist", "main.js");

export interface FleetRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  err: string;
}

/** Runs `fleet ARGS` with exactly `env` (plus PATH), collecting its output and exit code. */
export function fleet(env: Record<string, string | undefined>, args: readonly string[], options: SpawnOptions & { stdin?: string } = {}): Promise<FleetRun> & { child: ReturnType<typeof spawn> } {
  const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH, FLEET_ENV_FILE: "/nonexistent", ...env }, stdio: ["pipe", "pipe", "pipe"], ...options });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  if (options.stdin !== undefined) child.stdin!.end(options.stdin);
  else child.stdin!.end();
  const done = new Promise<FleetRun>((resolve) => child.on("close", (code, signal) => resolve({ code, signal, out, err })));
  return Object.assign(done, { child });
}

/** `fleet ARGS --json`, expecting exit 0 and no stderr. */
export async function fleetJson<T = any>(env: Record<string, string | undefined>, args: readonly string[]): Promise<T> {
  const r = await fleet(env, [...args, "--json"]);
  if (r.code !== 0) throw new Error(`fleet ${args.join(" ")} exited ${r.code}: ${r.err}${r.out}`);
  return JSON.parse(r.out) as T;
}
