import { spawn } from "node:child_process";
import { guardedCommandLine } from "./remoteCommand";

/**
 * The guarded line as bash runs it (sshd runs it through the user's shell, bash here), with
 * its timing forced: bash reports a background job killed by a signal, with its command line
 * (the exported variables and quoted arguments of a template), on its own stderr when it
 * notices the job's end. A command that died before the shell reached its `wait` — at once, on
 * a loaded host (seen in a test run) — was reported on the captured stderr. Here a `sleep 1` put
 * after the launch line makes that order certain: nothing of the command line may come out,
 * while the command's own stderr and a template's parse error still do.
 */
describe("the guarded command line, when the command dies before the shell waits for it", () => {
  const run = (line: string, slowLaunch: boolean): Promise<{ status: number | null; stderr: string }> => {
    const lines = guardedCommandLine("t0k", line).split("\n");
    // After the line that ends the launch (`) … & fleet_command=$!`).
    const launchEnd = lines.findIndex((l) => l.includes("fleet_command=$!"));
    expect(launchEnd).toBeGreaterThan(0);
    if (slowLaunch) lines.splice(launchEnd + 1, 0, "sleep 1");
    const child = spawn("bash", ["-c", lines.join("\n")], { stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => void (stderr += d.toString()));
    // Keep stdin open (the watchdog reads it) until the command ended.
    return new Promise((resolve) => child.once("close", (status) => resolve({ status, stderr })));
  };

  it("reports nothing of the killed command's line", async () => {
    const r = await run("export FLEET_TOKEN='env-secret'; sh -c 'kill -s KILL $$' sh 'arg-secret'\n", true);
    expect(r.status).toBe(128 + 9);
    expect(r.stderr).not.toMatch(/secret|Killed/);
    expect(r.stderr).toMatch(/^fleet-pid-t0k \d+\n$/);
  });

  it("still passes on the command's own stderr and a template's parse error", async () => {
    const own = await run("echo 'to stderr' >&2; exit 3\n", true);
    expect(own).toEqual({ status: 3, stderr: expect.stringMatching(/^fleet-pid-t0k \d+\nto stderr\n$/) });
    const broken = await run("echo 'unclosed\n", false);
    expect(broken.stderr).toMatch(/unexpected EOF|syntax error/);
  });
});
