import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { startSshServer } from "./sshServer";
import type { SshServer } from "./sshServer";

const run = promisify(execFile);

/** The OpenSSH client, trusting only the test server's key. */
async function ssh(server: SshServer, command: string): Promise<string> {
  const knownHosts = join(server.dir, "test_known_hosts");
  await writeFile(knownHosts, `${server.knownHostsLine}\n`);
  const { stdout } = await run("ssh", [
    "-i", join(server.dir, "client_ed25519"),
    "-o", `UserKnownHostsFile=${knownHosts}`,
    "-o", "StrictHostKeyChecking=yes",
    "-o", "BatchMode=yes",
    "-p", String(server.port),
    `${server.user}@${server.host}`,
    command,
  ]);
  return stdout;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("startSshServer", () => {
  let server: SshServer;

  beforeAll(async () => {
    server = await startSshServer({ fixtures: { "fleet-hello": "#!/bin/sh\necho \"hello $*\"\n" } });
  });

  afterAll(async () => {
    await server.stop();
  });

  it("serves the client key, a host key OpenSSH verifies, and installed fixtures on PATH", async () => {
    expect(await ssh(server, "fleet-hello world")).toBe("hello world\n");
    const { stdout } = await run("ssh-keygen", ["-l", "-f", join(server.dir, "host_ed25519.pub")]);
    expect(stdout.split(" ")[1]).toBe(server.hostFingerprint);
    expect(server.knownHostsLine).toBe(`[127.0.0.1]:${server.port} ${server.hostPublicKey}`);
    expect(existsSync(server.root)).toBe(true);
  });

  it("kill() drops the listener and every session; restart() serves on the same port", async () => {
    // A session left running: kill() must end it too, not only the listener.
    const started = Date.now();
    const session = ssh(server, "sleep 30").then(
      () => "finished",
      (err: { code?: unknown }) => `failed with ${String(err.code)}`,
    );
    await new Promise((resolve) => setTimeout(resolve, 500));
    await server.kill();
    expect(await accepts(server.port)).toBe(false);
    expect(await session).toBe("failed with 255"); // ssh's exit status for a dropped connection
    expect(Date.now() - started).toBeLessThan(10_000);

    await server.restart();
    expect(await ssh(server, "echo back")).toBe("back\n");
  });

  it("restart() on a port another server took meanwhile fails, rather than calling the other server ready", async () => {
    await server.kill();
    // Someone else's SSH server on the port: it sends a banner like any sshd.
    const thief = net.createServer((socket) => socket.end("SSH-2.0-NotOurs\r\n"));
    await new Promise<void>((resolve, reject) => thief.once("error", reject).listen(server.port, "127.0.0.1", () => resolve()));
    try {
      await expect(server.restart()).rejects.toThrow(/sshd exited at startup/);
    } finally {
      await new Promise((r) => thief.close(r));
    }
    await server.restart();
    expect(await ssh(server, "echo back")).toBe("back\n");
  });

  it("stop() removes its temp dir; two servers never share a port", async () => {
    const other = await startSshServer();
    expect(other.port).not.toBe(server.port);
    await other.stop();
    expect(existsSync(other.dir)).toBe(false);
    expect(await accepts(other.port)).toBe(false);
  });
});
