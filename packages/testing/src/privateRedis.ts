import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { freePort } from "./freePort";

/**
 * A redis-server of one test's own on a free loopback port, for real Redis faults: FLUSHALL,
 * a restart that comes back empty, a crash. The shared Redis on 6379 is never touched.
 */
export interface PrivateRedis {
  url: string;
  port: number;
  /** FLUSHALL: every key of every process gone, as after a restart without persistence. */
  flushAll(): Promise<void>;
  /** SIGKILL: connections drop; nothing answers until start(). */
  kill(): Promise<void>;
  /**
   * SIGSTOP: the server keeps its keys and its connections, but answers nothing (commands wait
   * in its sockets) until resume(): what a client cut off from Redis sees.
   */
  pause(): void;
  /** SIGCONT after pause(): the waiting commands run, keys whose expiry passed meanwhile are gone. */
  resume(): void;
  /** Starts the server again on the same port (empty). */
  start(): Promise<void>;
  /** kill() then start(): a restart without persistence. */
  restart(): Promise<void>;
  /** Kills the server and removes its directory. */
  stop(): Promise<void>;
}

const STARTUP_TIMEOUT_MS = 10_000;

export async function startPrivateRedis(): Promise<PrivateRedis> {
  let port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), "fleet-redis-"));
  let url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  let output = "";

  const start = async () => {
    output = "";
    const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--maxmemory-policy", "noeviction"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    proc.stdout!.on("data", (d: Buffer) => void (output = (output + d.toString()).slice(-8192)));
    proc.stderr!.on("data", (d: Buffer) => void (output = (output + d.toString()).slice(-8192)));
    const closed = new Promise<void>((r) => proc.once("close", () => r()));
    child = proc;
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        await closed; // all of its output read
        throw new Error(`redis-server exited with ${proc.exitCode ?? proc.signalCode}:\n${output}`);
      }
      // Our server, not another one that holds the port (ours then exits: "Address already in use").
      if (await answers(url, proc.pid)) return;
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer within ${STARTUP_TIMEOUT_MS} ms:\n${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const kill = async () => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGKILL");
    await exited;
  };

  // Started again on the same port, as a restarted server is. The port came from the kernel's
  // ephemeral range, so while the server was down an outgoing connection (any process's) may
  // have been given it as its local port: wait for that to go rather than fail the test.
  const startAgain = async () => {
    for (const deadline = Date.now() + 10_000; ; ) {
      try {
        return await start();
      } catch (err) {
        await kill();
        if (!/Address already in use/.test(output) || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };

  // The port was free a moment ago; if someone took it meanwhile, pick another.
  for (let attempt = 1; ; attempt++) {
    try {
      await start();
      break;
    } catch (err) {
      const portTaken = /Address already in use/.test(output);
      await kill();
      if (!portTaken || attempt >= 3) {
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
      port = await freePort();
      url = `redis://127.0.0.1:${port}`;
    }
  }
  return {
    url,
    port,
    async flushAll() {
      const redis = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: true });
      await redis.connect();
      try {
        await redis.flushall();
      } finally {
        redis.disconnect();
      }
    },
    kill,
    pause() {
      if (!child?.kill("SIGSTOP")) throw new Error("redis-server is not running: cannot pause it");
    },
    resume() {
      if (!child?.kill("SIGCONT")) throw new Error("redis-server is not running: cannot resume it");
    },
    start: startAgain,
    async restart() {
      await kill();
      await startAgain();
    },
    async stop() {
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Whether the redis-server with process id `pid` answers at `url`. */
async function answers(url: string, pid: number | undefined): Promise<boolean> {
  const redis = new Redis(url, { maxRetriesPerRequest: 0, lazyConnect: true, retryStrategy: () => null, connectTimeout: 500 });
  redis.on("error", () => undefined);
  try {
    await redis.connect();
    return /^process_id:(\d+)\r?$/m.exec(await redis.info("server"))?.[1] === String(pid);
  } catch {
    return false;
  } finally {
    redis.disconnect();
  }
}
