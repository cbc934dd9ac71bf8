import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "@fleet/core/errors";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { sshServerEntry, writeServersFile, writeSshClientFiles } from "@fleet/testing/sshServersFile";
import type { SshClientFiles } from "@fleet/testing/sshServersFile";
import { RemoteServers } from "../src/remote/remoteServers";
import { loadServersFile } from "../src/remote/serversFile";
import { createPipelineHarness, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/** Registered servers and the remote-command job, against a real OpenSSH sshd on loopback. */

let ssh: SshServer;
let dir: string;
let client: SshClientFiles;
let serversFile: string;

/** nas1: `s`, registered with its environment, commands and error patterns. */
const nas1 = (s: SshServer) =>
  sshServerEntry(s, client, {
    timeout: "20s",
    builtinPaths: [s.root],
    env: { FLEET_SITE: "lab" },
    commands: {
      "echo-args": "fleet-args {first} {second}",
      site: 'echo "site=$FLEET_SITE"',
      "fill-disk": 'fleet-fail "write failed: No space left on device"',
      "no-access": 'fleet-fail "cp: cannot create /export/x: Permission denied"',
      busy: 'fleet-fail "export lock held by another run"',
      slow: "sleep 30",
      crash: `sh -c 'echo "half done"; kill -s TERM $$'`,
    },
    errorPatterns: { retryable: ["lock held"] },
  });

beforeAll(async () => {
  ssh = await startSshServer({
    fixtures: {
      "fleet-args": '#!/bin/sh\nfor a in "$@"; do printf "[%s]\\n" "$a"; done\n',
      "fleet-fail": '#!/bin/sh\necho "$1" >&2\nexit 3\n',
    },
  });
  dir = await mkdtemp(join(tmpdir(), "fleet-servers-"));
  client = await writeSshClientFiles(ssh, dir);
  serversFile = await writeServersFile(join(dir, "servers.yaml"), { nas1: nas1(ssh) });
});

afterAll(async () => {
  await ssh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("registered servers", () => {
  let servers: RemoteServers;
  beforeAll(() => {
    servers = new RemoteServers(loadServersFile(serversFile));
  });

  it("runs a registered command with each value quoted into its placeholder", async () => {
    const hostile = `it's $(touch ${join(dir, "pwned")}) \`id\` ; rm -rf / "x"\nsecond line`;
    const result = await servers.run("nas1", "echo-args", { first: hostile, second: "plain" });
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toBe(`[${hostile}]\n[plain]\n`);
    await expect(import("node:fs/promises").then((fs) => fs.access(join(dir, "pwned")))).rejects.toThrow();
  });

  it("exports the server's environment to its commands", async () => {
    expect((await servers.run("nas1", "site")).stdout).toBe("site=lab\n");
  });

  it("has the builtin helpers on every server", async () => {
    const tree = join(ssh.root, "tree");
    await mkdir(join(tree, "a"), { recursive: true });
    await writeFile(join(tree, "a", "f"), Buffer.alloc(5000));
    const size = await servers.run("nas1", "folder-size", { path: tree });
    expect(size.value).toBeGreaterThanOrEqual(5000);
    expect((await servers.run("nas1", "mkdir-p", { path: join(ssh.root, "x y", "z") })).value).toBe(true);
    expect((await servers.run("nas1", "folder-size", { path: join(ssh.root, "x y", "z") })).value).toBeGreaterThan(0);
    expect((await servers.run("nas1", "command-exists", { name: "fleet-args" })).value).toBe(true);
    expect((await servers.run("nas1", "command-exists", { name: "no-such-tool" })).value).toBe(false);
  });

  it("confines the path builtins to the server's builtinPaths", async () => {
    for (const path of ["/etc", "/", `${ssh.root}/../etc`, "relative/path", `${ssh.root}-other`]) {
      for (const command of ["folder-size", "mkdir-p"]) {
        await expect(servers.run("nas1", command, { path })).rejects.toMatchObject({ category: "invalid-payload", retryable: false, message: expect.stringContaining("builtinPaths") });
      }
    }
    expect((await servers.run("nas1", "folder-size", { path: ssh.root })).value).toBeGreaterThanOrEqual(0);
  });

  it("classifies failed exits by the server's patterns, then the defaults", async () => {
    // A full disk can be freed: retryable (permanent before issue 9); a refusal is permanent.
    await expect(servers.run("nas1", "fill-disk")).rejects.toMatchObject({ retryable: true, category: "no-space" });
    await expect(servers.run("nas1", "no-access")).rejects.toMatchObject({ retryable: false, category: "permission-denied" });
    await expect(servers.run("nas1", "busy")).rejects.toMatchObject({ retryable: true, category: "unavailable" });
  });

  it("kills a command at its timeout, retryable", async () => {
    const started = Date.now();
    await expect(servers.run("nas1", "slow", {}, { timeoutMs: 500 })).rejects.toMatchObject({ retryable: true, category: "timeout" });
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("refuses unknown servers and commands, and missing values, as permanent invalid-payload", async () => {
    await expect(servers.run("nas9", "site")).rejects.toMatchObject({ retryable: false, category: "invalid-payload", message: expect.stringContaining("registered: nas1") });
    await expect(servers.run("nas1", "rm-everything")).rejects.toMatchObject({ category: "invalid-payload", message: expect.stringContaining("echo-args") });
    await expect(servers.run("nas1", "echo-args", { first: "x" })).rejects.toMatchObject({ category: "invalid-payload" });
    await expect(servers.run("nas1", "folder-size")).rejects.toMatchObject({ category: "invalid-payload", message: expect.stringContaining("{path}") });
  });

  it("looks commands up as own names only: constructor and __proto__ are unknown commands, not network errors", async () => {
    for (const name of ["constructor", "__proto__", "toString", "hasOwnProperty"]) {
      await expect(servers.run("nas1", name)).rejects.toMatchObject({ retryable: false, category: "invalid-payload", message: expect.stringContaining(`has no command "${name}"`) });
    }
  });

  it("lists servers and commands without secrets", () => {
    const listing = JSON.stringify(servers.list());
    expect(servers.list()).toEqual([{ name: "nas1", target: `root@127.0.0.1:${ssh.port}`, commands: expect.arrayContaining(["echo-args", "folder-size"]) }]);
    expect(listing).not.toContain("PRIVATE KEY");
  });

  it("refuses a server presenting another host key", async () => {
    const other = await startSshServer();
    try {
      const file = join(dir, "swapped.yaml");
      // nas1's known host key, but the port of a server with a different key: a man in the middle.
      await writeServersFile(file, { nas1: { ...nas1(ssh), port: other.port } });
      await writeFile(join(dir, "known_hosts"), `${ssh.knownHostsLine}\n${ssh.knownHostsLine.replace(`:${ssh.port}]`, `:${other.port}]`).replace(`]:${ssh.port}`, `]:${other.port}`)}\n`);
      const swapped = new RemoteServers(loadServersFile(file));
      await expect(swapped.run("nas1", "site")).rejects.toMatchObject({ retryable: false, message: expect.stringMatching(/host key/i) });
    } finally {
      await writeFile(join(dir, "known_hosts"), `${ssh.knownHostsLine}\n`);
      await other.stop();
    }
  });
});

describe("servers file errors", () => {
  const load = async (text: string): Promise<ConfigError> => {
    const file = join(dir, `bad-${Math.random().toString(36).slice(2)}.yaml`);
    await writeFile(file, text);
    try {
      loadServersFile(file);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return err as ConfigError;
    }
    throw new Error("expected a ConfigError");
  };

  it("lists every problem with the server it belongs to", async () => {
    const err = await load(`
servers:
  a:
    host: h
    user: u
  b:
    host: h
    user: u
    keyFile: /nonexistent/key
    fingerprint: SHA256:abc
    timeout: soon
    errorPatterns:
      permanent: ["("]
`);
    expect(err.issues).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/servers\.a: set keyFile or passwordFile/),
        expect.stringMatching(/servers\.a: set knownHostsFile or fingerprint/),
        expect.stringMatching(/servers\.b: keyFile \/nonexistent\/key cannot be read \(ENOENT\)/),
        expect.stringMatching(/servers\.b: timeout "soon" is not a duration/),
        expect.stringMatching(/servers\.b: errorPatterns\.permanent: "\(" is not a regular expression/),
      ]),
    );
  });

  it("refuses at startup a template whose placeholder quoting cannot protect (the backquote attack of issue 10)", async () => {
    const err = await load(`
servers:
  a:
    host: h
    user: u
    keyFile: ${join(dir, "key")}
    fingerprint: SHA256:abc
    commands:
      base: echo \`basename {p}\`
      sub: echo "$(basename {p})"
      prog: "{p} --version"
      ok: du -sb -- {p}
`);
    expect(err.issues).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/servers\.a: commands\.base: .*placeholder \{p\} inside `…` backquotes cannot be quoted safely/),
        expect.stringMatching(/servers\.a: commands\.sub: .*placeholder \{p\} inside \$\(…\)/),
        expect.stringMatching(/servers\.a: commands\.prog: .*the program to run/),
      ]),
    );
    expect(err.issues.some((i) => i.includes("commands.ok"))).toBe(false);
  });

  it("refuses unknown fields (a typo must not silently drop a setting)", async () => {
    const err = await load(`servers:\n  a:\n    host: h\n    user: u\n    passwrd: x\n`);
    expect(err.message).toMatch(/servers\.a: Unrecognized key.*passwrd/);
    expect(err.message).not.toContain(": x");
  });

  it("says when the file is not YAML or not there", async () => {
    expect((await load("servers: [unclosed")).message).toMatch(/is not valid YAML/);
    expect(() => loadServersFile(join(dir, "missing.yaml"))).toThrow(/cannot read it \(ENOENT\)/);
  });
});

describe("the remote-command job", () => {
  let h: PipelineHarness;
  beforeAll(async () => {
    h = await createPipelineHarness("remote-job", { SSH_SERVERS_FILE: serversFile });
    await h.startRunner({ queues: ["remote"] });
  });
  afterAll(() => h?.close());

  it("runs the command, returns its output and logs it", async () => {
    const job = await h.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "echo-args", values: { first: "a b", second: "c" } });
    const done = await finishedJob(h.runtime, "remote", job.id!);
    expect(done.state).toBe("completed");
    expect(done.job.returnvalue).toMatchObject({ server: "nas1", command: "echo-args", exitCode: 0, stdout: "[a b]\n[c]\n" });
    const log = await h.runtime.db.query("SELECT level, subject, message FROM migration_log WHERE subject = 'remote:nas1:echo-args' ORDER BY id");
    expect(log.rows).toEqual([
      { level: "info", subject: "remote:nas1:echo-args", message: "starting (attempt 1)" },
      { level: "info", subject: "remote:nas1:echo-args", message: expect.stringMatching(/^exit 0 in \d+ ms$/) },
    ]);
  });

  it("fails a permanent error at once, with a log row", async () => {
    const job = await h.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "no-access", values: {} });
    const done = await finishedJob(h.runtime, "remote", job.id!);
    expect([done.state, done.job.attemptsMade]).toEqual(["failed", 1]);
    expect(done.job.failedReason).toMatch(/Permission denied/);
    const log = await h.runtime.db.query("SELECT level, details->>'category' AS category FROM migration_log WHERE subject = 'remote:nas1:no-access' ORDER BY id");
    expect(log.rows).toEqual([{ level: "info", category: null }, { level: "error", category: "permission-denied" }]);
  });

  it("logs a command killed by a signal as killed by it, a retryable failure of its own", async () => {
    // The watchdog's shell exits with 128 + N for a command killed by signal N: the row said
    // "exited with code 143".
    await h.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "crash", values: {} });
    const row = await waitFor(async () => {
      const log = await h.runtime.db.query("SELECT message, details->>'category' AS category, details->>'retryable' AS retryable FROM migration_log WHERE subject = 'remote:nas1:crash' AND level = 'error'");
      return log.rows[0];
    });
    expect(row).toEqual({ message: expect.stringMatching(/ was killed by SIGTERM: half done$/), category: "unknown", retryable: "true" });
  });

  it("refuses a payload carrying a command line", async () => {
    await expect(h.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "site", commandLine: "rm -rf /" } as never)).rejects.toThrow(/commandLine/);
  });
});
