import { mkdtemp, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { SftpStorage } from "@fleet/storage/sftp/sftpStorage";
import { sha256Of } from "../src/migration/migratedFiles";

/**
 * `fleet migrate verify` and the checksum audit hash destination objects with sha256Of. Its
 * signal reaches the read: a cancel ends it at once, also while an SFTP object modified moments
 * ago is waited out (the racy rule: up to ~2 s a round, three rounds for a file being written).
 */
let server: SshServer;
let root: string;
let storage: SftpStorage;

beforeAll(async () => {
  server = await startSshServer();
  root = await mkdtemp(path.join(server.root, "sha-abort-"));
  storage = new SftpStorage({ host: server.host, port: server.port, username: server.user, privateKey: server.privateKey, hostKey: { knownHostsLine: server.knownHostsLine }, root });
});
afterAll(async () => {
  await storage?.close();
  await rm(root, { recursive: true, force: true });
  await server?.stop();
});

it("a cancel while a freshly written object is waited out ends the hash at once, as a cancel (not 'unreadable')", async () => {
  // Written just after a second begins: the wait then runs ~2 s, well past the bound below.
  await new Promise((r) => setTimeout(r, 1_050 - (Date.now() % 1_000)));
  await writeFile(path.join(root, "fresh.bin"), "just written");
  const controller = new AbortController();
  const hashing = sha256Of(storage, "fresh.bin", controller.signal).then(
    (value) => ({ settled: "resolved", value }),
    (err: Error) => ({ settled: "rejected", value: err.message }),
  );
  await new Promise((r) => setTimeout(r, 200));
  const abortedAt = Date.now();
  controller.abort();
  const outcome = await hashing;
  const ms = Date.now() - abortedAt;
  expect(outcome.settled).toBe("rejected");
  // Without the signal on the read, the wait ran out (~2 s) before the cancel was noticed.
  expect(ms).toBeLessThan(1_000);
});
