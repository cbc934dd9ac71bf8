import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "./freePort";

/**
 * A real OpenSSH sshd on loopback for one test file: its own host key, client key, config,
 * port and SFTP root in a temp dir, so test files never share state or a fixed port.
 *
 * sshd forks a process per connection (each calls setsid, so they are not in the
 * listener's process group); kill() and stop() therefore walk /proc for the listener's
 * descendants, so that "the server died" really cuts every open connection.
 */

export interface SshServerOptions {
  /** Scripts to install in `binDir` (on the sessions' PATH), name → body; made executable. */
  fixtures?: Record<string, string>;
  /**
   * sshd's ClientAliveInterval in seconds, with ClientAliveCountMax 1: a client that stops
   * answering (frozen, cut off) is disconnected after about twice this. Default 0: never.
   */
  clientAliveSeconds?: number;
}

/**
 * What the SFTP adapter needs to reach a test server as its user, rooted at `root`: the shape
 * `SftpStorageOptions` takes (declared here so this package does not depend on @fleet/storage).
 */
export interface SshServerSftpOptions {
  host: "127.0.0.1";
  port: number;
  username: "root";
  privateKey: Buffer;
  hostKey: { knownHostsLine: string };
  root: string;
}

export interface SshServer {
  host: "127.0.0.1";
  port: number;
  user: "root";
  /** The client's private key (OpenSSH format, no passphrase), listed in authorized_keys. */
  privateKey: Buffer;
  /** The host's public key line as in a .pub file: `ssh-ed25519 AAAA…`. */
  hostPublicKey: string;
  /** As `ssh-keygen -l` prints it: `SHA256:` + unpadded base64. */
  hostFingerprint: string;
  /** `[127.0.0.1]:PORT ssh-ed25519 AAAA…`, for a known_hosts file or the adapter's hostKey. */
  knownHostsLine: string;
  /** An empty directory to use as an SFTP root (the server sees the same filesystem). */
  root: string;
  /** Where fixtures are installed; first on the sessions' PATH. */
  binDir: string;
  /** The temp dir holding everything (keys, config, root); removed by stop(). */
  dir: string;
  /** Options for an SftpStorage on this server (client key, pinned host key) rooted at `root`. */
  sftpOptions(root: string): SshServerSftpOptions;
  /** The sshd log so far (sshd -e), for failure messages. */
  log(): string;
  /** Kills sshd and every session process, and removes the temp dir. */
  stop(): Promise<void>;
  /** SIGKILLs sshd and every session process (open connections drop); the files stay. */
  kill(): Promise<void>;
  /** Starts sshd again on the same port with the same keys (after kill()). */
  restart(): Promise<void>;
  /** SIGSTOPs sshd and every session process: connections stay open but nothing answers. */
  pause(): Promise<void>;
  /** SIGCONTs what pause() stopped. */
  resume(): Promise<void>;
}

const SSHD = "/usr/sbin/sshd";
/** How to get sshd where it is missing (Debian's package; `npm test` installs it itself). */
export const SSHD_INSTALL_HINT = "install it with `apt-get install -y openssh-server` (Debian)";

/** Whether OpenSSH's sshd is on this machine (a test or bench that needs one says so when it is not). */
export function sshdInstalled(): boolean {
  return existsSync(SSHD);
}
const STARTUP_TIMEOUT_MS = 10_000;
const LOG_LIMIT = 64 * 1024;

const run = promisify(execFile);

export async function startSshServer(options: SshServerOptions = {}): Promise<SshServer> {
  const dir = await mkdtemp(join(tmpdir(), "fleet-sshd-"));
  try {
    return await startIn(dir, options);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

async function startIn(dir: string, options: SshServerOptions): Promise<SshServer> {
  // sshd refuses to start without its privilege separation directory.
  await mkdir("/run/sshd", { recursive: true });
  const root = join(dir, "root");
  const binDir = join(dir, "bin");
  await mkdir(root);
  await mkdir(binDir);
  for (const [name, body] of Object.entries(options.fixtures ?? {})) {
    if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new Error(`fixture name ${JSON.stringify(name)} is not a plain file name`);
    const path = join(binDir, name);
    await writeFile(path, body);
    await chmod(path, 0o755);
  }

  const hostKeyPath = join(dir, "host_ed25519");
  const clientKeyPath = join(dir, "client_ed25519");
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "fleet-test-host", "-f", hostKeyPath]);
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "fleet-test-client", "-f", clientKeyPath]);
  const hostPublicKey = (await readFile(`${hostKeyPath}.pub`, "utf8")).trim().split(/\s+/).slice(0, 2).join(" ");
  const privateKey = await readFile(clientKeyPath);
  await writeFile(join(dir, "authorized_keys"), await readFile(`${clientKeyPath}.pub`));

  const blob = Buffer.from(hostPublicKey.split(" ")[1] ?? "", "base64");
  const hostFingerprint = `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;

  let port = await freePort();
  let child: ChildProcess | undefined;
  let log = "";
  const configPath = join(dir, "sshd_config");

  const launch = async (): Promise<void> => {
    await writeFile(configPath, sshdConfig(dir, port, hostKeyPath, binDir, options.clientAliveSeconds ?? 0));
    const proc = spawn(SSHD, ["-D", "-e", "-f", configPath], { stdio: ["ignore", "ignore", "pipe"] });
    child = proc;
    // What this process said at startup (the log spans restarts): whether *it* listens.
    let startup = "";
    proc.stderr?.setEncoding("utf8");
    proc.stderr?.on("data", (text: string) => {
      log = (log + text).slice(-LOG_LIMIT);
      if (startup.length < 64 * 1024) startup += text;
    });
    const exited = new Promise<never>((_, reject) => {
      proc.once("exit", (code, signal) => reject(new Error(`sshd exited at startup (code ${code}, signal ${signal}):\n${log}`)));
      proc.once("error", reject);
    });
    exited.catch(() => undefined);
    // Ready when our sshd says it listens on the port (another server that took the port
    // meanwhile could answer with a banner of its own) and the port answers.
    const listening = `Server listening on 127.0.0.1 port ${port}.`;
    await Promise.race([waitForBanner(port, () => startup.includes(listening)), exited]);
  };

  const signalAll = async (signal: NodeJS.Signals): Promise<void> => {
    const pid = child?.pid;
    if (pid === undefined) return;
    for (const target of [pid, ...(await descendantsOf(pid))]) {
      try {
        process.kill(target, signal);
      } catch {
        // Already gone.
      }
    }
  };

  const killAll = async (): Promise<void> => {
    const proc = child;
    child = undefined;
    if (!proc?.pid || proc.exitCode !== null || proc.signalCode !== null) return;
    // Children first are collected while the listener still exists (their ppid chain is
    // intact); then everyone gets SIGKILL at once.
    const pids = [proc.pid, ...(await descendantsOf(proc.pid))];
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    await exited;
  };

  // The port was free a moment ago; if someone took it meanwhile, pick another.
  for (let attempt = 0; ; attempt++) {
    try {
      await launch();
      break;
    } catch (err) {
      await killAll();
      if (attempt >= 2) throw err;
      port = await freePort();
    }
  }

  const knownHostsLine = `[127.0.0.1]:${port} ${hostPublicKey}`;
  return {
    host: "127.0.0.1",
    port,
    user: "root",
    privateKey,
    hostPublicKey,
    hostFingerprint,
    knownHostsLine,
    root,
    binDir,
    dir,
    sftpOptions: (sftpRoot) => ({ host: "127.0.0.1", port, username: "root", privateKey, hostKey: { knownHostsLine }, root: sftpRoot }),
    log: () => log,
    kill: killAll,
    pause: () => signalAll("SIGSTOP"),
    resume: () => signalAll("SIGCONT"),
    restart: async () => {
      await killAll();
      await launch();
    },
    stop: async () => {
      await killAll();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function sshdConfig(dir: string, port: number, hostKeyPath: string, binDir: string, clientAliveSeconds: number): string {
  return [
    `Port ${port}`,
    "ListenAddress 127.0.0.1",
    `HostKey ${hostKeyPath}`,
    `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
    `PidFile ${join(dir, "sshd.pid")}`,
    "PermitRootLogin yes",
    "PubkeyAuthentication yes",
    // Real password checks, so a wrong password is refused by sshd itself.
    "PasswordAuthentication yes",
    "KbdInteractiveAuthentication no",
    "PermitEmptyPasswords no",
    "StrictModes no",
    "UsePAM no",
    "UseDNS no",
    "PrintMotd no",
    "PrintLastLog no",
    "X11Forwarding no",
    "Subsystem sftp internal-sftp",
    // Pools of 16 connections opened at once, several test connections besides.
    "MaxStartups 200:30:400",
    "MaxSessions 64",
    "MaxAuthTries 10",
    "LoginGraceTime 30",
    `ClientAliveInterval ${clientAliveSeconds}`,
    "ClientAliveCountMax 1",
    "AcceptEnv LANG LC_*",
    // sshd runs every command through the user's login shell, and Debian's bash sources
    // ~/.bashrc when it sees it was started by sshd at shell level 1 — whatever that file does
    // (on the build machine: `pyenv init`, whose rehash lock serialises concurrent sessions for
    // seconds) would then run before every command. SHLVL=1 makes bash level 2, which skips it:
    // the fixture server runs the command, not the machine's shell setup.
    `SetEnv PATH=${binDir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SHLVL=1`,
    "LogLevel INFO",
    "",
  ].join("\n");
}


/** Resolves once our sshd said it listens (`owned`) and the port sends an SSH banner. */
async function waitForBanner(port: number, owned: () => boolean): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    if (owned() && (await bannerArrives(port))) return;
    if (Date.now() > deadline) throw new Error(`sshd did not ${owned() ? "answer" : "say it listens"} on 127.0.0.1:${port} within ${STARTUP_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function bannerArrives(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    let received = "";
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2000, () => done(false));
    socket.on("error", () => done(false));
    socket.on("data", (data) => {
      received += data.toString("latin1");
      if (received.includes("SSH-2.0-")) done(true);
    });
    socket.on("end", () => done(false));
  });
}

/** Every live descendant of a process, from /proc (ppid links). */
async function descendantsOf(pid: number): Promise<number[]> {
  const parents = new Map<number, number>();
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      // "pid (comm) state ppid …"; comm may contain spaces and parentheses.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parents.set(Number(entry), ppid);
    } catch {
      // Exited while we looked.
    }
  }
  const found: number[] = [];
  const queue = [pid];
  for (let current = queue.shift(); current !== undefined; current = queue.shift()) {
    for (const [child, parent] of parents) {
      if (parent === current) {
        found.push(child);
        queue.push(child);
      }
    }
  }
  return found;
}
