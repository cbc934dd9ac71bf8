import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { chown, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { freePort } from "./freePort";

const run = promisify(execFile);

/**
 * A PostgreSQL cluster of one test's own (initdb + pg_ctl on a free loopback port, trust
 * auth), for real database faults: a crash-restart (`pg_ctl -m immediate`: the server's
 * processes die without a checkpoint and the next start runs crash recovery, answering "the
 * database system is starting up" meanwhile), a stop, a start. The shared server on 5432 is
 * never touched. Use `baseUrl` with createTestDatabase({ baseUrl }) to put a test's database on it.
 */
export interface PrivatePostgres {
  /** postgresql://postgres@127.0.0.1:PORT/postgres */
  baseUrl: string;
  port: number;
  /** pg_ctl -m immediate restart: a crash and the recovery that follows; resolves once it accepts connections. */
  crashRestart(): Promise<void>;
  /** pg_ctl stop (mode fast by default; immediate is a crash). */
  stopServer(mode?: "fast" | "immediate"): Promise<void>;
  /** pg_ctl start; with `wait` false it returns at once (the server may still be starting up). */
  startServer(wait?: boolean): Promise<void>;
  /** Resolves once the server accepts connections. */
  waitAccepting(timeoutMs?: number): Promise<void>;
  /** Stops the server and removes the cluster. */
  destroy(): Promise<void>;
  log(): Promise<string>;
}

/** The directory of initdb/pg_ctl: PG_BIN, else the newest /usr/lib/postgresql/<major>/bin. */
export function postgresBinDir(): string {
  const fromEnv = process.env.PG_BIN;
  if (fromEnv) return fromEnv;
  const root = "/usr/lib/postgresql";
  const majors = existsSync(root) ? readdirSync(root).filter((d) => /^\d+$/.test(d)).sort((a, b) => Number(b) - Number(a)) : [];
  for (const m of majors) if (existsSync(join(root, m, "bin", "initdb"))) return join(root, m, "bin");
  throw new Error("initdb not found: install PostgreSQL's server binaries (postgresql-15) or set PG_BIN");
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = postgresBinDir();
  let port = await freePort();
  const root = await mkdtemp(join(tmpdir(), "fleet-pg-"));
  const dataDir = join(root, "data");
  const logFile = join(root, "server.log");
  // initdb refuses to run as root: as root, the cluster belongs to the postgres user.
  const asRoot = process.getuid?.() === 0;
  const pgUser = asRoot ? await uidOf("postgres") : undefined;
  if (pgUser) await chown(root, pgUser.uid, pgUser.gid);
  const exec = async (args: string[]) => {
    const cmd = args.map(shellQuote).join(" ");
    return asRoot ? run("su", ["postgres", "-s", "/bin/sh", "-c", cmd], { timeout: 120_000 }) : run(args[0]!, args.slice(1), { timeout: 120_000 });
  };
  await exec([join(bin, "initdb"), "-D", dataDir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
  // fsync off: a crash of the server's processes (not of the machine) loses nothing, and tests run faster.
  const options = () => `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c shared_buffers=32MB`;
  const pgCtl = (...args: string[]) => exec([join(bin, "pg_ctl"), "-D", dataDir, "-o", options(), "-l", logFile, ...args]);
  let baseUrl = `postgresql://postgres@127.0.0.1:${port}/postgres`;

  const waitAccepting = async (timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      const client = new pg.Client({ connectionString: baseUrl, connectionTimeoutMillis: 1_000 });
      client.on("error", () => undefined);
      try {
        await client.connect();
        await client.query("SELECT 1");
        return;
      } catch (err) {
        last = err;
      } finally {
        await client.end().catch(() => undefined);
      }
      if (Date.now() > deadline) throw new Error(`private PostgreSQL on port ${port} did not accept connections within ${timeoutMs} ms: ${(last as Error)?.message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  // The port was free a moment ago; if someone took it meanwhile (the postmaster then exits,
  // logging "could not bind … Address already in use", and pg_ctl fails), pick another. pg_ctl -w
  // waits for this data directory's postmaster, so a server of someone else's on the port never
  // passes for ours.
  for (let attempt = 1; ; attempt++) {
    const logBefore = (await readFile(logFile, "utf8").catch(() => "")).length;
    try {
      await pgCtl("-w", "start");
      break;
    } catch (err) {
      const logged = (await readFile(logFile, "utf8").catch(() => "")).slice(logBefore);
      if (!/Address already in use/.test(logged) || attempt >= 3) {
        await pgCtl("-m", "immediate", "-w", "stop").catch(() => undefined);
        await rm(root, { recursive: true, force: true });
        // (Not `instanceof Error`: execFile's errors come from another realm under jest.)
        const failure = err as { message?: unknown };
        if (typeof failure?.message === "string") failure.message += `\nserver log:\n${logged.slice(-8192)}`;
        throw err;
      }
      port = await freePort();
      baseUrl = `postgresql://postgres@127.0.0.1:${port}/postgres`;
    }
  }
  await waitAccepting();
  return {
    baseUrl,
    port,
    async crashRestart() {
      await pgCtl("-m", "immediate", "-w", "restart");
      await waitAccepting();
    },
    async stopServer(mode = "fast") {
      await pgCtl("-m", mode, "-w", "stop");
    },
    async startServer(wait = true) {
      await pgCtl(wait ? "-w" : "-W", "start");
      if (wait) await waitAccepting();
    },
    waitAccepting,
    async destroy() {
      await pgCtl("-m", "immediate", "-w", "stop").catch(() => undefined);
      await rm(root, { recursive: true, force: true });
    },
    async log() {
      return readFile(logFile, "utf8").catch(() => "");
    },
  };
}

async function uidOf(user: string): Promise<{ uid: number; gid: number } | undefined> {
  const passwd = await readFile("/etc/passwd", "utf8").catch(() => "");
  const line = passwd.split("\n").find((l) => l.startsWith(`${user}:`));
  if (!line) return undefined;
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_./=:,@+-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}
