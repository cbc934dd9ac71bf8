import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile, chmod, readdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { runRemoteCommand } from "./remoteCommand";
import { renderCommand } from "./remoteShell";
import type { SshTarget } from "./sshTarget";

/**
 * Hostile values through real shells: whatever a value holds, a rendered template hands it to
 * the program as exactly one literal argument — or the renderer refuses it with a clear
 * invalid-payload error (a NUL byte; a leading '-' where the template has no `--`). The
 * program is a tiny script that prints each of its arguments followed by a NUL (the one byte
 * no argument can contain), so the split is exact; it runs under `bash -c`, `dash -c`
 * and through a real sshd (the user's login shell, then `sh -c`, as Fleet runs commands).
 * Any value that breaks out would also create the canary file, checked after each suite.
 */

const FRAGMENTS = [
  "'", '"', "`", "\\", "$", "$(", ")", "${", "}", "$((1+1))", "`touch CANARY`", "$(touch CANARY)", "';touch CANARY;'",
  "a`;touch CANARY;`b", "\n", "\r", "\t", " ", ";", "&", "|", "&&", "||", "<", ">", ">>", "*", "?", "[a]", "{a,b}", "~", "#", "!", "=",
  "-", "--", "-rf", "--help", "\u2018", "\u2019", "\u201c", "\u201d", "\u00a0", "\u2028", "\u0085", "é", "日本", "🎉", "%s", "%n", "\x1b[31m", "\x07",
];

/** Strings built from hostile fragments and arbitrary (valid) unicode. */
const hostile = fc
  .array(fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...FRAGMENTS) }, { weight: 1, arbitrary: fc.fullUnicodeString({ maxLength: 8 }) }), { maxLength: 12 })
  .map((parts) => parts.join(""))
  // A NUL cannot be in any argv: generated separately and expected to be refused.
  .filter((s) => !s.includes("\0"));

let dir: string;
let program: string;

// A shell script starts in a millisecond (node would take most of the test's time); "$@"
// hands each argument over untouched.
const ARGV_PRINT = "#!/bin/sh\nprintf '%s\\0' \"$@\"\n";
const argvOf = (out: string): string[] => out.split("\0").slice(0, -1);

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "fleet-shellproof-"));
  program = path.join(dir, "argv-print");
  await writeFile(program, ARGV_PRINT);
  await chmod(program, 0o755);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const template = (n: number, endOfOptions: boolean) => `argv-print ${endOfOptions ? "-- " : ""}${Array.from({ length: n }, (_, i) => `{v${i}}`).join(" ")}`;
const valuesOf = (vs: readonly string[]) => Object.fromEntries(vs.map((v, i) => [`v${i}`, v]));

describe.each(["/bin/bash", "/bin/dash"].filter((s) => existsSync(s)))("hostile values through %s -c", (shell) => {
  const run = (line: string): string[] =>
    // stdin ignored: bash reads ~/.bashrc when its stdin is a socket (as under jest).
    argvOf(execFileSync(shell, ["-c", line], { cwd: dir, env: { PATH: `${dir}:/usr/bin:/bin` }, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }));

  it("reach the program as one literal argument each (after --)", () => {
    fc.assert(
      fc.property(fc.array(hostile, { minLength: 1, maxLength: 6 }), (vs) => {
        expect(run(renderCommand(template(vs.length, true), valuesOf(vs)))).toEqual(["--", ...vs]);
      }),
      { numRuns: 200 },
    );
    expect(existsSync(path.join(dir, "CANARY"))).toBe(false);
  });

  it("without --: arrive literally, or are refused when they start with '-'", () => {
    fc.assert(
      fc.property(fc.array(hostile, { minLength: 1, maxLength: 4 }), (vs) => {
        const line = () => renderCommand(template(vs.length, false), valuesOf(vs));
        if (vs.some((v) => v.startsWith("-"))) expect(line).toThrow(/starts with '-' and would be read as an option/);
        else expect(run(line())).toEqual(vs);
      }),
      { numRuns: 100 },
    );
  });

  it("a very long value arrives whole; a NUL byte is refused with a clear error", () => {
    // Linux takes at most 128 KiB in one argument (MAX_ARG_STRLEN), quoting included.
    const long = "'$(x)`\n".repeat(12_000);
    expect(run(renderCommand("argv-print -- {a}", { a: long }))).toEqual(["--", long]);
    fc.assert(
      fc.property(hostile, hostile, (a, b) => {
        expect(() => renderCommand("argv-print -- {a}", { a: `${a}\0${b}` })).toThrow(/contains a NUL byte, which no command argument can carry/);
      }),
      { numRuns: 30 },
    );
    expect(existsSync(path.join(dir, "CANARY"))).toBe(false);
  });
});

describe("hostile values through a real sshd", () => {
  let server: SshServer;
  let target: SshTarget;

  beforeAll(async () => {
    server = await startSshServer({ fixtures: { "argv-print": ARGV_PRINT } });
    target = { host: server.host, port: server.port, username: server.user, privateKey: server.privateKey, hostKey: { fingerprint: server.hostFingerprint } };
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("reach the program as one literal argument each", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(hostile, { minLength: 1, maxLength: 8 }), async (vs) => {
        const result = await runRemoteCommand(target, { template: `cd -- {dir} && ${template(vs.length, true)}`, values: { dir: server.root, ...valuesOf(vs) } }, { timeoutMs: 20_000 });
        expect(argvOf(result.stdout)).toEqual(["--", ...vs]);
      }),
      { numRuns: 60 },
    );
    const long = "'$(x)`\n\u201c".repeat(5_000);
    const result = await runRemoteCommand(target, { template: "argv-print -- {a}", values: { a: long } }, { timeoutMs: 20_000 });
    expect(argvOf(result.stdout)).toEqual(["--", long]);
    expect(await readdir(server.root)).toEqual([]);
  });
});
