import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { access, constants, mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./freePort";

/**
 * A real S3-compatible server (s3rver 3.7.1) on loopback for one test file, in a child
 * process so that a test can SIGKILL it mid-transfer and start it again on the same port with
 * the same data. See docs ENVIRONMENT.md "S3-compatible server" for its quirks; two matter
 * here:
 * - ListObjectsV2 continuation tokens are DES-encrypted, which Node only offers with
 *   `--openssl-legacy-provider`: without it every listing past 1,000 keys answers 500.
 * - It checks no SigV4 signature, only that the access key id is its own (`S3RVER`): a wrong
 *   secret is accepted, a wrong key id is refused with InvalidAccessKeyId.
 */

export interface S3Server {
  /** `http://127.0.0.1:PORT`: use with path-style addressing (forcePathStyle). */
  endpoint: string;
  /** s3rver's one built-in account. */
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** The data directory (buckets are folders in it); removed by stop(). */
  dir: string;
  /** Creates a bucket (idempotent). */
  createBucket(name: string): Promise<void>;
  /** Stores an object under any key s3rver takes (keys Fleet itself refuses included: a tab, ".."). */
  putObject(bucket: string, key: string, body: string | Buffer): Promise<void>;
  /** What the server printed so far, for failure messages. */
  log(): string;
  /** Stops the server and removes its data. */
  stop(): Promise<void>;
  /** SIGKILLs the server (open connections drop mid-request); the data stays. */
  kill(): void;
  /** Starts the server again on the same port with the same data (after kill() or not). */
  restart(): Promise<void>;
  /** SIGSTOPs the server: connections stay open, nothing answers (a hung or partitioned server). */
  pause(): void;
  /** SIGCONTs what pause() stopped. */
  resume(): void;
}

const ACCESS_KEY_ID = "S3RVER";
const SECRET_ACCESS_KEY = "S3RVER";
const REGION = "us-east-1";
const STARTUP_TIMEOUT_MS = 15_000;
const LOG_LIMIT = 64 * 1024;

export async function startS3Server(): Promise<S3Server> {
  const dir = await mkdtemp(join(await scratchBase(), "fleet-s3rver-"));
  try {
    return await startIn(dir);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

// Runs in the child. It exits when its stdin closes, i.e. when the test process is gone, so a
// crashed or killed jest worker leaves no server behind.
const CHILD_SCRIPT = `
const S3rver = require(process.argv[1]);
const [, , directory, port] = process.argv;
new S3rver({ directory, address: "127.0.0.1", port: Number(port), silent: true })
  .run()
  .then(() => console.log("s3rver listening on 127.0.0.1:" + port))
  .catch((err) => { console.error(err); process.exit(1); });
process.stdin.on("end", () => process.exit(0)).resume();
`;

async function startIn(dir: string): Promise<S3Server> {
  const s3rver = require.resolve("s3rver");
  let port = await freePort();
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let log = "";
  const append = (text: string): void => {
    log = (log + text).slice(-LOG_LIMIT);
  };

  const launch = async (): Promise<void> => {
    const proc = spawn(process.execPath, ["--openssl-legacy-provider", "-e", CHILD_SCRIPT, "--", s3rver, dir, String(port)], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    child = proc;
    exited = new Promise((resolve) => proc.once("exit", () => resolve()));
    // What this process printed (the log spans restarts): whether *it* listens.
    let startup = "";
    proc.stdout?.setEncoding("utf8").on("data", (text: string) => {
      append(text);
      if (startup.length < 64 * 1024) startup += text;
    });
    proc.stderr?.setEncoding("utf8").on("data", append);
    const failed = new Promise<never>((_, reject) => {
      proc.once("exit", (code, signal) => reject(new Error(`s3rver exited at startup (code ${code}, signal ${signal}):\n${log}`)));
      proc.once("error", reject);
    });
    failed.catch(() => undefined);
    // Ready when our s3rver says it listens on the port (another server that took the port
    // meanwhile could answer HTTP) and the port answers.
    const listening = `s3rver listening on 127.0.0.1:${port}`;
    await Promise.race([waitUntilAnswering(port, () => startup.includes(listening)), failed]);
  };

  const kill = (): void => {
    const proc = child;
    child = undefined;
    if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
  };

  // The port was free a moment ago; if someone took it meanwhile, pick another.
  for (let attempt = 0; ; attempt++) {
    try {
      await launch();
      break;
    } catch (err) {
      kill();
      await exited;
      if (attempt >= 2) throw err;
      port = await freePort();
    }
  }

  return {
    endpoint: `http://127.0.0.1:${port}`,
    accessKeyId: ACCESS_KEY_ID,
    secretAccessKey: SECRET_ACCESS_KEY,
    region: REGION,
    dir,
    log: () => log,
    createBucket: (name) => createBucket(port, name),
    putObject: async (bucket, key, body) => {
      const path = `/${encodeURIComponent(bucket)}/${key.split("/").map(encodeURIComponent).join("/")}`;
      const { status, body: answer } = await request(port, "PUT", path, body);
      if (status !== 200) throw new Error(`s3rver refused to store ${bucket}/${key}: ${status} ${answer}`);
    },
    kill,
    pause: () => void child?.kill("SIGSTOP"),
    resume: () => void child?.kill("SIGCONT"),
    restart: async () => {
      kill();
      await exited;
      await launch();
    },
    stop: async () => {
      kill();
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** tmpfs when there is one: s3rver writes several small files per object. */
async function scratchBase(): Promise<string> {
  try {
    await access("/dev/shm", constants.W_OK);
    return "/dev/shm";
  } catch {
    return tmpdir();
  }
}


/** Resolves once our s3rver said it listens (`owned`) and the port answers HTTP. */
async function waitUntilAnswering(port: number, owned: () => boolean): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    try {
      if (!owned()) throw new Error("not listening yet");
      await request(port, "GET", "/");
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`s3rver did not ${owned() ? "answer" : "say it listens"} on 127.0.0.1:${port} within ${STARTUP_TIMEOUT_MS} ms`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

// An unsigned request is anonymous to s3rver, which lets anyone create a bucket: the harness
// needs no SDK for it. 409 is "you already have it".
async function createBucket(port: number, name: string): Promise<void> {
  const { status, body } = await request(port, "PUT", `/${encodeURIComponent(name)}`);
  if (status !== 200 && status !== 409) throw new Error(`s3rver refused to create bucket ${name}: ${status} ${body}`);
}

function request(port: number, method: string, path: string, payload?: string | Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path, agent: false, timeout: 2_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (text: string) => (body += text));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end(payload);
  });
}
