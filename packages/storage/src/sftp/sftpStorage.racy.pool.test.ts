import { mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { isLinkFaultCategory } from "@fleet/core/errors";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { SftpStorage } from "./sftpStorage";

// The racy rule's wait (sftpVersions.ts) holds no connection of the pool. Found by review: the
// first version slept while holding its lease, so a hot file kept a session slot busy doing
// nothing (up to ~2 s for a file modified once, three rounds for a file being written), and an
// operation queued behind it failed retryable "timeout" once past the pool's acquire deadline
// (SFTP_TIMEOUT): a link-fault category that counts toward the link breaker, though the server
// answered every request at once.

let server: SshServer;
let root: string;

beforeAll(async () => {
  server = await startSshServer();
});
afterAll(async () => {
  await server.stop();
});
beforeEach(async () => {
  root = await mkdtemp(path.join(server.root, "racy-pool-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Resolves 400 ms into the next second of the clock (a 300 ms writer has then written in this second). */
async function intoNextSecond(): Promise<void> {
  const second = Math.floor(Date.now() / 1000) + 1;
  await new Promise((r) => setTimeout(r, second * 1000 + 400 - Date.now()));
}

it("a file being written is waited out without holding the only session slot: a cold read meanwhile is answered at once, not failed 'timeout' (a link fault)", async () => {
  // SFTP_POOL_SIZE=1, SFTP_OPERATIONS_PER_CONNECTION=1, SFTP_TIMEOUT=3s: all accepted settings,
  // and 3 s is above the "at most ~2 s" the racy rule documents for a recently modified file.
  const storage = new SftpStorage({
    host: server.host,
    port: server.port,
    username: server.user,
    privateKey: server.privateKey,
    hostKey: { knownHostsLine: server.knownHostsLine },
    root,
    poolSize: 1,
    operationsPerConnection: 1,
    operationTimeoutMs: 3_000,
  });
  let writer: NodeJS.Timeout | undefined;
  try {
    const cold = path.join(root, "cold.txt");
    await writeFile(cold, "cold");
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(cold, hourAgo, hourAgo);
    // Control: the session is open and the server answers a cold read at once.
    const t0 = Date.now();
    expect((await storage.readBuffer("cold.txt")).toString()).toBe("cold");
    expect(Date.now() - t0).toBeLessThan(500);

    // A file rewritten every 300 ms (as the racy test's "busy.log").
    const busy = path.join(root, "busy.log");
    await writeFile(busy, "0");
    let n = 0;
    writer = setInterval(() => void writeFile(busy, String(++n % 10)).catch(() => undefined), 300);
    await intoNextSecond();
    const startedBusy = Date.now();
    const busyRead = storage.readBuffer("busy.log").then(
      () => ({ ok: true as const, ms: Date.now() - startedBusy }),
      (err: { category: string }) => ({ ok: false as const, category: err.category, ms: Date.now() - startedBusy }),
    );
    await new Promise((r) => setTimeout(r, 100));
    const startedCold = Date.now();
    const coldRead = await storage.readBuffer("cold.txt").then(
      (b) => ({ ok: true as const, body: b.toString(), ms: Date.now() - startedCold }),
      (err: { category: string; message: string }) => ({ ok: false as const, category: err.category, linkFault: isLinkFaultCategory(err.category), message: err.message, ms: Date.now() - startedCold }),
    );
    const busyOutcome = await busyRead;
    // A cold file on a server that answers at once must be read, not fail as a link fault.
    expect({ coldRead, busyOutcome }).toMatchObject({ coldRead: { ok: true, body: "cold" }, busyOutcome: { ok: false, category: "source-changed" } });
    expect(coldRead.ms).toBeLessThan(2_500); // not queued behind the busy file's waits (~3.6 s)
  } finally {
    if (writer) clearInterval(writer);
    await storage.close();
  }
}, 30_000);
