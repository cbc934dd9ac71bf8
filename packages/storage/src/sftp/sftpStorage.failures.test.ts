import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { utils } from "ssh2";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { fingerprintOf } from "@fleet/remote/sshHostKey";
import { SftpStorage } from "./sftpStorage";
import type { SftpStorageOptions } from "./sftpStorage";
import { isTempName } from "../tempNames";
import { rejectionOf } from "@fleet/testing/rejections";

const sha256 = (data: Buffer | string): string => createHash("sha256").update(data).digest("hex");

let server: SshServer;
let root: string;
const opened: SftpStorage[] = [];

function sftp(overrides: Partial<SftpStorageOptions> = {}): SftpStorage {
  const storage = new SftpStorage({ ...server.sftpOptions(root), ...overrides });
  opened.push(storage);
  return storage;
}

/** Another ed25519 public key, as known_hosts would hold it: a server we don't expect. */
function otherHostKey(): { line: string; fingerprint: string } {
  const { public: publicKey } = utils.generateKeyPairSync("ed25519");
  const base64 = publicKey.split(" ")[1] as string;
  return { line: `[127.0.0.1]:${server.port} ssh-ed25519 ${base64}`, fingerprint: fingerprintOf(Buffer.from(base64, "base64")) };
}

const accepted = (): number => (server.log().match(/Accepted (publickey|password)/g) ?? []).length;

beforeAll(async () => {
  server = await startSshServer();
});

afterAll(async () => {
  await server.stop();
});

beforeEach(async () => {
  root = await mkdtemp(path.join(server.root, "f-"));
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
  await rm(root, { recursive: true, force: true });
});

describe("SftpStorage host keys and credentials", () => {
  it("refuses a server whose host key is not the configured one, before logging in", async () => {
    const other = otherHostKey();
    const before = accepted();
    for (const hostKey of [{ fingerprint: other.fingerprint }, { knownHostsLine: other.line }]) {
      const storage = sftp({ hostKey });
      const err = await rejectionOf(storage.write("x.txt", Buffer.from("secret data")));
      expect(err).toMatchObject({ category: "auth-failed", retryable: false });
      expect(err.message).toContain(server.hostFingerprint); // what the server presented
      expect(err.message).toContain(other.fingerprint); // what we expected
      expect(storage.poolStats()).toMatchObject({ open: 0, created: 0 });
    }
    // sshd never saw a login: our credentials were not offered to an unverified host.
    expect(accepted()).toBe(before);
    expect(await readdir(root)).toEqual([]);
  });

  it("accepts the right key given as a fingerprint alone", async () => {
    const storage = sftp({ hostKey: { fingerprint: server.hostFingerprint } });
    await storage.write("ok.txt", Buffer.from("ok"));
    expect(await readFile(path.join(root, "ok.txt"), "utf8")).toBe("ok");
  });

  it("has no accept-any mode: a missing host key is bad config at construction", () => {
    expect(() => sftp({ hostKey: {} })).toThrow(/no host key configured/);
    expect(() => sftp({ hostKey: { knownHostsLine: `otherhost ${server.hostPublicKey}` } })).toThrow(/no key for \[127\.0\.0\.1\]/);
    expect(() => sftp({ hostKey: { fingerprint: "MD5:aa:bb" } })).toThrow(/not a SHA256 fingerprint/);
  });

  it("fails a wrong password permanently with auth-failed, naming the server but not the password", async () => {
    const storage = sftp({ privateKey: undefined, password: "definitely-wrong-pw" });
    const err = await rejectionOf(storage.readBuffer("x"));
    expect(err).toMatchObject({ category: "auth-failed", retryable: false });
    expect(err.message).toContain(`root@127.0.0.1:${server.port}`);
    expect(err.message).not.toContain("definitely-wrong-pw");
    expect(server.log()).toMatch(/Failed password for root/);
  });

  it("fails a key the server does not know permanently with auth-failed", async () => {
    const storage = sftp({ privateKey: utils.generateKeyPairSync("ed25519").private });
    expect(await rejectionOf(storage.stat("x"))).toMatchObject({ category: "auth-failed", retryable: false });
  });
});

describe("SftpStorage when the server goes away", () => {
  it("fails an interrupted transfer retryable, leaves no object, and succeeds once the server is back", async () => {
    const storage = sftp({ readyTimeoutMs: 3000 });
    await storage.write("warm-up", Buffer.from("x")); // a pooled connection exists

    // An upload that is midway when the server dies.
    let pushed = 0;
    const body = new Readable({
      read() {
        if (pushed++ < 4) this.push(randomBytes(64 * 1024));
      },
    });
    const writing = storage.write("big/interrupted.bin", body);
    for (let i = 0; i < 200 && !(await readdir(path.join(root, "big")).catch(() => [])).some((n) => isTempName(n)); i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await server.kill();
    const err = await rejectionOf(writing);
    expect(err).toMatchObject({ retryable: true });
    expect(["network", "timeout", "interrupted"]).toContain(err.category);
    expect(err.message).toContain("big/interrupted.bin");
    expect(storage.poolStats()).toMatchObject({ open: 0, active: 0 });
    expect(storage.poolStats().lost).toBeGreaterThanOrEqual(1);

    // While it is down: retryable network errors, quickly (connection refused).
    const down = await rejectionOf(storage.readBuffer("warm-up"));
    expect(down).toMatchObject({ category: "network", retryable: true });

    // The retry after the restart goes through on a new connection; only the final name is visible.
    await server.restart();
    const data = randomBytes(256 * 1024);
    expect(await storage.write("big/interrupted.bin", Readable.from([data]))).toMatchObject({ sha256: sha256(data), unchanged: false });
    expect(sha256(await storage.readBuffer("big/interrupted.bin"))).toBe(sha256(data));
    // The first attempt's temp file, which the dead connection kept us from removing, is gone
    // too: removed through the first connection that worked (the sweep keeps it: its writer is alive).
    expect(await readdir(path.join(root, "big"))).toEqual(["interrupted.bin"]);
  });

  it("fails everyone waiting at once when the server is down, instead of one connection attempt each", async () => {
    const storage = sftp({ poolSize: 2, operationsPerConnection: 1 });
    await storage.write("w", Buffer.from("w"));
    await server.kill();
    try {
      const started = Date.now();
      const results = await Promise.all(Array.from({ length: 30 }, () => rejectionOf(storage.readBuffer("w"))));
      for (const err of results) expect(err).toMatchObject({ retryable: true });
      expect(results.filter((e) => e.category === "network").length).toBeGreaterThanOrEqual(28);
      expect(Date.now() - started).toBeLessThan(3000);
      expect(storage.poolStats()).toMatchObject({ waiting: 0, active: 0, open: 0, connecting: 0 });
    } finally {
      await server.restart();
    }
    expect((await storage.readBuffer("w")).toString()).toBe("w");
  });

  it("fails a read stream cut by the server retryable", async () => {
    const storage = sftp();
    await storage.write("stream.bin", randomBytes(4 * 1024 * 1024));
    const stream = await storage.createReadStream("stream.bin");
    const failed = new Promise<{ category: string; retryable: boolean }>((resolve) => stream.on("error", resolve));
    stream.once("data", () => {
      stream.pause();
      void server.kill().then(() => stream.resume());
    });
    expect(await failed).toMatchObject({ retryable: true });
    await server.restart();
    expect((await storage.exists("stream.bin"))?.size).toBe(4 * 1024 * 1024);
  });

  it("turns a server that stops answering into a retryable timeout and replaces the connection", async () => {
    const storage = sftp({ operationTimeoutMs: 800 });
    await storage.write("hung.txt", Buffer.from("before"));
    await server.pause();
    try {
      const started = Date.now();
      const err = await rejectionOf(storage.readBuffer("hung.txt"));
      expect(err).toMatchObject({ category: "timeout", retryable: true });
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      await server.resume();
    }
    expect((await storage.readBuffer("hung.txt")).toString()).toBe("before");
    expect(storage.poolStats().created).toBe(2);
  });
});
