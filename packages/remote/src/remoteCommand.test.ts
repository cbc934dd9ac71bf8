import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { utils } from "ssh2";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { RemoteCommandFailure, runRemoteCommand } from "./remoteCommand";
import { DEFAULT_REMOTE_ERROR_PATTERNS } from "./remoteErrors";
import { remoteCommandExists, remoteFolderSize, remoteMkdirP } from "./remoteOperations";
import type { SshTarget } from "./sshTarget";
import { rejectionOf } from "@fleet/testing/rejections";

let server: SshServer;
let target: SshTarget;
let work: string;

// Prints each argument on its own line as <arg>, so tests see exactly what argv arrived.
const ARGV_ECHO = `#!/bin/sh
for a in "$@"; do printf '<%s>\\n' "$a"; done
`;

beforeAll(async () => {
  server = await startSshServer({
    fixtures: {
      "fleet-argv": ARGV_ECHO,
      "fleet-fail": "#!/bin/sh\necho \"partial output\"\necho \"$1\" >&2\nexit \"${2:-3}\"\n",
      "fleet-selfkill": "#!/bin/sh\necho \"half done\"\nkill -s \"$1\" $$\nsleep 5\n",
    },
  });
  target = {
    host: server.host,
    port: server.port,
    username: server.user,
    privateKey: server.privateKey,
    hostKey: { fingerprint: server.hostFingerprint },
  };
});

afterAll(async () => {
  await server.stop();
});

beforeEach(async () => {
  work = await mkdtemp(path.join(server.root, "cmd-"));
});

afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

/** A sleep duration of about 30 s that no other process uses: `sleep <it>` is findable in /proc. */
function uniqueSleep(): string {
  return `30.${randomBytes(4).readUInt32BE(0)}`;
}

/** Is any process on this machine (the server is local) running with `marker` in its command line? */
async function processRunning(marker: string): Promise<boolean> {
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const { readFile } = await import("node:fs/promises");
      const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).replace(/\0/g, " ");
      if (cmdline.includes(`sleep ${marker}`)) return true;
    } catch {
      // exited meanwhile
    }
  }
  return false;
}

describe("runRemoteCommand", () => {
  it("returns exit code, stdout, stderr and duration", async () => {
    const result = await runRemoteCommand(target, { template: "echo out; echo err >&2; exit {code}", values: { code: "0" } }, { timeoutMs: 10_000 });
    expect(result).toMatchObject({ exitCode: 0, stdout: "out\n", stderr: "err\n", truncated: false });
    expect(result.durationMs).toBeGreaterThanOrEqual(0);
    expect(result.signal).toBeUndefined();
  });

  it("delivers hostile arguments as literal argv, never as shell syntax", async () => {
    const marker = path.join(work, "pwned");
    const hostile = [
      "; rm -rf / ;",
      `$(touch ${marker})`,
      `\`touch ${marker}\``,
      `it's "quoted" \\ back\\slash`,
      "line one\nline two; touch " + marker,
      "ünïcødé ✓ 日本",
      "*",
      "$HOME ~ !! #not-a-comment",
      "",
      "-n",
      "a'\\''b",
    ];
    const viaArgv = await runRemoteCommand(target, ["fleet-argv", ...hostile], { timeoutMs: 10_000 });
    expect(viaArgv.stdout).toBe(hostile.map((a) => `<${a}>\n`).join(""));

    const values = Object.fromEntries(hostile.map((a, i) => [`v${i}`, a]));
    // `--` first: "-n" is a value, and a template must say so (see commandTemplate.ts).
    const template = `fleet-argv -- ${hostile.map((_, i) => `{v${i}}`).join(" ")}`;
    const viaTemplate = await runRemoteCommand(target, { template, values }, { timeoutMs: 10_000 });
    expect(viaTemplate.stdout).toBe(`<-->\n${viaArgv.stdout}`);
    expect(existsSync(marker)).toBe(false);
    expect(existsSync("/tmp/pwned")).toBe(false);
  });

  it("passes environment variables, quoted like arguments", async () => {
    const env = { FLEET_ACCOUNT: "alice; touch /tmp/pwned-env", FLEET_EMPTY: "", LANG: "C.UTF-8" };
    const result = await runRemoteCommand(target, { template: 'fleet-argv "$FLEET_ACCOUNT" "$FLEET_EMPTY" "$LANG"', values: {} }, { timeoutMs: 10_000, env });
    expect(result.stdout).toBe("<alice; touch /tmp/pwned-env>\n<>\n<C.UTF-8>\n");
    expect(existsSync("/tmp/pwned-env")).toBe(false);
    await expect(runRemoteCommand(target, ["true"], { timeoutMs: 10_000, env: { "BAD NAME": "x" } })).rejects.toMatchObject({
      category: "invalid-payload",
    });
  });

  it("classifies a failed exit by its output, with the exit code and an excerpt in the message", async () => {
    const cases: Array<[string, string, boolean]> = [
      ["cp: cannot create '/x': Permission denied", "permission-denied", false],
      ["write error: No space left on device", "no-space", true],
      ["ls: cannot access 'gone': No such file or directory", "not-found", false],
      ["rsync: connection reset by peer", "network", true],
      ["operation timed out", "timeout", true],
      ["resource temporarily unavailable", "unavailable", true],
      ["something nobody mapped", "unknown", true],
    ];
    for (const [stderr, category, retryable] of cases) {
      const err = await rejectionOf(runRemoteCommand(target, ["fleet-fail", stderr, "3"], { timeoutMs: 10_000 }));
      expect(err).toMatchObject({ category, retryable });
      expect(err.message).toContain("exited with code 3");
      expect(err.message).toContain(stderr);
      expect(err.message).toContain(`root@127.0.0.1:${server.port}`);
      expect(err.message).not.toContain("partial output"); // stderr is the excerpt when there is one
      expect((err.cause as RemoteCommandFailure).result).toMatchObject({ exitCode: 3, stdout: "partial output\n" });
    }
    // The shell's own verdicts, whatever the output.
    expect(await rejectionOf(runRemoteCommand(target, ["no-such-program-xyz"], { timeoutMs: 10_000 }))).toMatchObject({
      category: "not-found",
      retryable: false,
    });
    const notExecutable = path.join(work, "not-executable");
    await writeFile(notExecutable, "#!/bin/sh\n");
    expect(await rejectionOf(runRemoteCommand(target, [notExecutable], { timeoutMs: 10_000 }))).toMatchObject({ category: "permission-denied" });
  });

  it("uses configured patterns and accepted exit codes", async () => {
    const errorPatterns = {
      permanent: [{ pattern: /account .* is locked/i, category: "auth-failed" as const }, /quota policy/],
      retryable: [...DEFAULT_REMOTE_ERROR_PATTERNS.retryable, { pattern: /busy, retry/i, category: "throttled" as const }],
    };
    expect(await rejectionOf(runRemoteCommand(target, ["fleet-fail", "account bob is locked"], { timeoutMs: 10_000, errorPatterns }))).toMatchObject({
      category: "auth-failed",
      retryable: false,
    });
    expect(await rejectionOf(runRemoteCommand(target, ["fleet-fail", "quota policy violated"], { timeoutMs: 10_000, errorPatterns }))).toMatchObject({
      category: "invalid-payload",
    });
    expect(await rejectionOf(runRemoteCommand(target, ["fleet-fail", "server busy, retry later"], { timeoutMs: 10_000, errorPatterns }))).toMatchObject({
      category: "throttled",
      retryable: true,
    });
    // Replaced defaults: "permission denied" is no longer known → retryable unknown.
    expect(await rejectionOf(runRemoteCommand(target, ["fleet-fail", "Permission denied"], { timeoutMs: 10_000, errorPatterns }))).toMatchObject({
      category: "unknown",
    });
    const ok = await runRemoteCommand(target, ["fleet-fail", "diff found", "1"], { timeoutMs: 10_000, okExitCodes: [0, 1] });
    expect(ok).toMatchObject({ exitCode: 1, stderr: "diff found\n" });
  });

  it("a command killed by a signal: its output is its own, no shell job report naming its arguments or environment", async () => {
    // bash (the fixture user's login shell) reports a job killed by a signal as
    // `bash: line 3: PID Killed <the command line>`: the watchdog's background job added it to
    // stderr, so the excerpt showed the arguments (and exported variables), and the error
    // patterns read them — an argument with "not found" in it made a crash permanent.
    const err = await rejectionOf(
      runRemoteCommand(target, ["sh", "-c", "kill -s KILL $$", "sh", "/srv/archive/not found-arg-secret"], { timeoutMs: 10_000, env: { FLEET_TOKEN: "env-secret" } }),
    );
    const { result } = err.cause as RemoteCommandFailure;
    expect(result.stderr).toBe("");
    expect(err.message).not.toContain("arg-secret");
    expect(err.message).not.toContain("env-secret");
    // A crash of its own: retried (nothing in its output says otherwise), reported as the signal.
    expect(err).toMatchObject({ category: "unknown", retryable: true });
    expect(result).toMatchObject({ exitCode: null, signal: "SIGKILL" });
  });

  it("reports a command killed by a signal as killed by it, not as exit code 128 + its number", async () => {
    // The watchdog's shell runs the command in the background and exits with 128 + N when it
    // dies of signal N: sshd saw an exit code, and the error said "exited with code 143".
    const err = await rejectionOf(runRemoteCommand(target, ["sh", "-c", "echo half done; kill -s TERM $$"], { timeoutMs: 10_000 }));
    expect(err.message).toMatch(/ was killed by SIGTERM: half done$/);
    expect(err).toMatchObject({ category: "unknown", retryable: true });
    expect((err.cause as RemoteCommandFailure).result).toMatchObject({ exitCode: null, signal: "SIGTERM", stdout: "half done\n" });
    // The signal's output is still read by the patterns: a permanent one makes it permanent.
    const denied = await rejectionOf(runRemoteCommand(target, ["sh", "-c", "echo Permission denied >&2; kill -s HUP $$"], { timeoutMs: 10_000 }));
    expect(denied).toMatchObject({ category: "permission-denied", retryable: false });
    expect(denied.message).toContain("was killed by SIGHUP");
    // A status that is no killing signal's stays an exit code (145 = 128 + SIGCHLD), and one the
    // caller lists as fine is taken as its exit code.
    expect((await rejectionOf(runRemoteCommand(target, ["fleet-fail", "odd", "145"], { timeoutMs: 10_000 }))).message).toContain("exited with code 145");
    const listed = await runRemoteCommand(target, ["fleet-fail", "stopped", "143"], { timeoutMs: 10_000, okExitCodes: [0, 143] });
    expect([listed.exitCode, listed.signal]).toEqual([143, undefined]);
  });

  it("tells a command that exits 128 + N itself from one killed by signal N, in argv and template form", async () => {
    // The watchdog's shell reported both as its status 128 + N: a program that caught SIGINT,
    // cleaned up and exited 130, as is customary, read as killed by SIGINT. One simple command
    // is now exec'd and sshd reports how it really ended.
    const exited = await rejectionOf(runRemoteCommand(target, ["fleet-fail", "cleaned up", "130"], { timeoutMs: 10_000 }));
    expect(exited.message).toMatch(/ exited with code 130: cleaned up$/);
    expect((exited.cause as RemoteCommandFailure).result).toMatchObject({ exitCode: 130 });
    expect((exited.cause as RemoteCommandFailure).result.signal).toBeUndefined();
    const template = await rejectionOf(runRemoteCommand(target, { template: "fleet-fail {msg} {code}", values: { msg: "stopped", code: "143" } }, { timeoutMs: 10_000 }));
    expect(template.message).toContain("exited with code 143");

    const killed = await rejectionOf(runRemoteCommand(target, ["fleet-selfkill", "INT"], { timeoutMs: 10_000 }));
    expect(killed.message).toMatch(/ was killed by SIGINT: half done$/);
    expect((killed.cause as RemoteCommandFailure).result).toMatchObject({ exitCode: null, signal: "SIGINT", stdout: "half done\n" });
    const killedTemplate = await rejectionOf(runRemoteCommand(target, { template: "fleet-selfkill {sig}", values: { sig: "TERM" } }, { timeoutMs: 10_000 }));
    expect(killedTemplate.message).toContain("was killed by SIGTERM");

    // A compound template is run by the shell, whose status cannot tell the two apart: 128 + N
    // still reads as signal N there (README says so).
    const compound = await rejectionOf(runRemoteCommand(target, { template: "cd / && fleet-fail {msg} 130", values: { msg: "x" } }, { timeoutMs: 10_000 }));
    expect(compound.message).toContain("was killed by SIGINT");
  });

  it("a template whose first word is a shell builtin with no program of its name is run by the shell, not exec'd", async () => {
    // `type {name}`, a plausible server check, was exec'd as a program since one simple command
    // is exec'd: bash has no /usr/bin/type, so the check failed with 127 where it had passed
    // (found by review; `cd`, `command`, `hash` were already known, `type`, `shopt`, `times`… not).
    for (const template of ["type {name}", "times", "shopt -q {name}", "dirs"]) {
      const result = await runRemoteCommand(target, { template, values: { name: template.startsWith("shopt") ? "extglob" : "sh" } }, { timeoutMs: 10_000, okExitCodes: [0, 1] });
      expect([template, result.exitCode, result.stderr]).toEqual([template, template.startsWith("shopt") ? 1 : 0, ""]);
    }
  });

  it("kills a command that runs past its timeout, children included", async () => {
    const tag = uniqueSleep();
    const started = Date.now();
    // A compound command: the shell stays the parent of sleep, so killing only it would leave sleep running.
    const err = await rejectionOf(runRemoteCommand(target, { template: `sleep {tag}; echo done`, values: { tag } }, { timeoutMs: 1000 }));
    expect(err).toMatchObject({ category: "timeout", retryable: true });
    expect(err.message).toContain("timed out after 1000 ms");
    expect(Date.now() - started).toBeLessThan(6000);
    for (let i = 0; i < 50 && (await processRunning(tag)); i++) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await processRunning(tag)).toBe(false);
  });

  it("an abort at any moment of the start leaves nothing running (before its PID is known too)", async () => {
    // Aborts spread over the connect, the channel's opening and the first output: one that came
    // after the channel opened but before the command's PID line left `sleep` running (the
    // channel was closed with only its session leader signalled; found by CI on a loaded machine,
    // then here: 3 of 40 aborts between 151 and 222 ms).
    const tags: Array<[string, number]> = [];
    for (let i = 0; i < 24; i++) {
      const tag = uniqueSleep();
      const delay = (i * 29) % 480;
      tags.push([tag, delay]);
      const controller = new AbortController();
      setTimeout(() => controller.abort(), delay);
      await runRemoteCommand(target, ["sleep", tag], { timeoutMs: 60_000, signal: controller.signal }).catch(() => undefined);
    }
    const left: number[] = [];
    for (const [tag, delay] of tags) {
      for (let i = 0; i < 30 && (await processRunning(tag)); i++) await new Promise((resolve) => setTimeout(resolve, 100));
      if (await processRunning(tag)) left.push(delay);
    }
    expect(left).toEqual([]);
  }, 120_000);

  it("kills a command when aborted", async () => {
    const tag = uniqueSleep();
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 500);
    const err = await rejectionOf(runRemoteCommand(target, ["sleep", tag], { timeoutMs: 60_000, signal: controller.signal }));
    expect(err).toMatchObject({ category: "interrupted", retryable: true });
    for (let i = 0; i < 50 && (await processRunning(tag)); i++) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await processRunning(tag)).toBe(false);
    const before = new AbortController();
    before.abort();
    expect(await rejectionOf(runRemoteCommand(target, ["true"], { timeoutMs: 1000, signal: before.signal }))).toMatchObject({ category: "interrupted" });
  });

  it("bounds captured output, keeping head and tail", async () => {
    const result = await runRemoteCommand(
      target,
      { template: "echo FIRST-LINE; head -c 10000000 /dev/zero | tr '\\0' x; echo; echo LAST-LINE", values: {} },
      { timeoutMs: 30_000, maxOutputBytes: 64 * 1024 },
    );
    expect(result.exitCode).toBe(0);
    expect(result.truncated).toBe(true);
    expect(result.stdout.length).toBeLessThan(70 * 1024);
    expect(result.stdout.startsWith("FIRST-LINE\n")).toBe(true);
    expect(result.stdout.endsWith("LAST-LINE\n")).toBe(true);
    expect(result.stdout).toMatch(/\[\d+ bytes omitted\]/);
  });

  it("refuses a wrong host key and a wrong password like the SFTP adapter", async () => {
    const other = utils.generateKeyPairSync("ed25519").public.split(" ")[1] as string;
    const wrongKey = { ...target, hostKey: { knownHostsLine: `[127.0.0.1]:${server.port} ssh-ed25519 ${other}` } };
    expect(await rejectionOf(runRemoteCommand(wrongKey, ["true"], { timeoutMs: 5000 }))).toMatchObject({ category: "auth-failed", retryable: false });
    const wrongPassword = { ...target, privateKey: undefined, password: "nope" };
    expect(await rejectionOf(runRemoteCommand(wrongPassword, ["true"], { timeoutMs: 5000 }))).toMatchObject({ category: "auth-failed" });
    const closedPort = { ...target, port: 1 };
    expect(await rejectionOf(runRemoteCommand(closedPort, ["true"], { timeoutMs: 5000 }))).toMatchObject({ category: "network", retryable: true });
  });
});

describe("remote helpers", () => {
  it("measures a folder with du -sb", async () => {
    await mkdir(path.join(work, "tree/sub dir"), { recursive: true });
    await writeFile(path.join(work, "tree/a"), randomBytes(1000));
    await writeFile(path.join(work, "tree/sub dir/b"), randomBytes(2345));
    const size = await remoteFolderSize(target, path.join(work, "tree"));
    // du -b counts the directories' own sizes too.
    expect(size).toBeGreaterThanOrEqual(3345);
    expect(size).toBeLessThan(3345 + 3 * 8192);
    expect(await rejectionOf(remoteFolderSize(target, path.join(work, "missing")))).toMatchObject({ category: "not-found" });
  });

  it("creates folders with mkdir -p, names with spaces and quotes included", async () => {
    const dir = path.join(work, "a b/it's/c");
    await remoteMkdirP(target, dir);
    await remoteMkdirP(target, dir); // exists already: fine
    expect(existsSync(dir)).toBe(true);
    await writeFile(path.join(work, "file"), "x");
    expect(await rejectionOf(remoteMkdirP(target, path.join(work, "file/sub")))).toMatchObject({ retryable: expect.any(Boolean) });
  });

  it("tells whether a command exists", async () => {
    expect(await remoteCommandExists(target, "du")).toBe(true);
    expect(await remoteCommandExists(target, "fleet-argv")).toBe(true);
    expect(await remoteCommandExists(target, "cd")).toBe(true); // a builtin
    expect(await remoteCommandExists(target, "no-such-command-xyz")).toBe(false);
    await expect(remoteCommandExists(target, "ls; touch /tmp/pwned")).rejects.toMatchObject({ category: "invalid-payload" });
  });
});
