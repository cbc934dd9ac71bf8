import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";

const run = promisify(execFile);
const CLI = join(__dirname, "..", "dist", "main.js");

describe("fleet remote", () => {
  let ssh: SshServer;
  let dir: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    ssh = await startSshServer({ fixtures: { "fleet-args": '#!/bin/sh\nfor a in "$@"; do printf "[%s]\\n" "$a"; done\n' } });
    dir = await mkdtemp(join(tmpdir(), "fleet-cli-remote-"));
    await writeFile(join(dir, "key"), ssh.privateKey, { mode: 0o600 });
    await writeFile(
      join(dir, "servers.yaml"),
      `servers:\n  nas1:\n    host: ${ssh.host}\n    port: ${ssh.port}\n    user: ${ssh.user}\n    keyFile: ${join(dir, "key")}\n    fingerprint: ${ssh.hostFingerprint}\n    commands:\n      args: fleet-args {a} {b}\n`,
    );
    env = { ...process.env, SSH_SERVERS_FILE: join(dir, "servers.yaml"), FLEET_ENV_FILE: "/nonexistent", LOG_LEVEL: "silent" };
  });

  afterAll(async () => {
    await ssh?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("lists the registered servers and their commands", async () => {
    const { stdout } = await run(process.execPath, [CLI, "remote", "list", "--json"], { env });
    expect(JSON.parse(stdout)).toEqual([{ name: "nas1", target: `root@127.0.0.1:${ssh.port}`, commands: ["args", "command-exists"] }]);
  });

  it("runs a registered command with quoted values and prints its output", async () => {
    const { stdout } = await run(process.execPath, [CLI, "remote", "run", "nas1", "args", "--value", "a=one two", "--value", "b=$(id)"], { env });
    expect(stdout).toBe("[one two]\n[$(id)]\n");
  });

  it("exits 1 with a clear message for an unknown command", async () => {
    const failed = await run(process.execPath, [CLI, "remote", "run", "nas1", "reboot"], { env }).catch((err: { code: number; stderr: string }) => err);
    expect(failed).toMatchObject({ code: 1, stderr: expect.stringContaining('server "nas1" has no command "reboot"') });
  });
});
