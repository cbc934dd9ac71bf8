import { spawn } from "node:child_process";
import { guardedCommandLine } from "./remoteCommand";

/**
 * The guarded line as bash runs it (sshd runs it through the user's shell, bash here): bash
 * reports a command killed by a signal, with its command line (the exported variables and
 * quoted arguments of a template), on its own stderr. Nothing of the command line may come out,
 * while the command's own stderr and a template's parse error still do; a program exec'd ends
 * the shell as it ends itself (killed by a signal, or its own exit status).
 */
describe("the guarded command line, when the command dies of a signal", () => {
  const run = (line: string, execd = false): Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }> => {
    const child = spawn("bash", ["-c", guardedCommandLine("t0k", line, execd)], { stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => void (stderr += d.toString()));
    // Keep stdin open (the watchdog reads it) until the command ended.
    return new Promise((resolve) => child.once("close", (status, signal) => resolve({ status, signal, stderr })));
  };

  it("reports nothing of the killed command's line", async () => {
    const r = await run("export FLEET_TOKEN='env-secret'; sh -c 'kill -s KILL $$' sh 'arg-secret'");
    expect(r.status).toBe(128 + 9);
    expect(r.stderr).not.toMatch(/secret|Killed/);
    expect(r.stderr).toMatch(/^fleet-pid-t0k \d+\n$/);
  });

  it("a program exec'd ends the shell as it ends: by its signal, or with its own status", async () => {
    expect(await run("export FLEET_TOKEN='env-secret'; exec sh -c 'kill -s INT $$' sh 'arg-secret'", true)).toEqual({ status: null, signal: "SIGINT", stderr: expect.stringMatching(/^fleet-pid-t0k \d+\n$/) });
    expect(await run("exec sh -c 'exit 130'", true)).toMatchObject({ status: 130, signal: null });
  });

  it("still passes on the command's own stderr and a template's parse error", async () => {
    const own = await run("echo 'to stderr' >&2; exit 3");
    expect(own).toEqual({ status: 3, signal: null, stderr: expect.stringMatching(/^fleet-pid-t0k \d+\nto stderr\n$/) });
    const broken = await run("echo 'unclosed");
    expect(broken.stderr).toMatch(/unexpected EOF|syntax error/);
  });
});
