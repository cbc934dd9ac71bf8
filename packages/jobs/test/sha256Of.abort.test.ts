import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { SftpStorage } from "@fleet/storage/sftp/sftpStorage";
import { DestinationHasher, sha256Of } from "../src/migration/migratedFiles";
import type { MigratedFile } from "../src/migration/migratedFiles";

/**
 * `fleet migrate verify` and the checksum audit hash destination objects with sha256Of. Its
 * signal reaches the read: a cancel ends it at once, also while an SFTP object modified moments
 * ago is waited out (the racy rule: up to ~2 s a round, three rounds for a file being written).
 * The same holds for a packaged file, hashed inside its package (PackageChecker).
 */
let server: SshServer;
let root: string;
let storage: SftpStorage;

beforeAll(async () => {
  server = await startSshServer();
  root = await mkdtemp(path.join(server.root, "sha-abort-"));
  storage = new SftpStorage(server.sftpOptions(root));
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

/** Waits until just after a second begins: a file written then is waited out ~2 s before it is read. */
const startOfSecond = () => new Promise((r) => setTimeout(r, 1_050 - (Date.now() % 1_000)));

it("a packaged file: a cancel while its package's manifest is waited out ends the check at once, and is not remembered as the package's answer", async () => {
  await startOfSecond();
  // Not a valid manifest: the checker fails on it only once it has been read.
  await mkdir(path.join(root, ".fleet-packages"), { recursive: true });
  await writeFile(path.join(root, ".fleet-packages", "p-1.manifest.json"), "{}");
  const file: MigratedFile = { fileId: 7, key: "a/b.txt", name: "b.txt", owner: null, createdAt: null, sha256: "0".repeat(64), size: 3, newUri: ".fleet-packages/p-1.tar#a/b.txt" };
  const hasher = new DestinationHasher(storage, undefined);
  const controller = new AbortController();
  const checking = hasher.sha256(file, controller.signal).then(
    (value) => ({ settled: "resolved", value }),
    (err: Error) => ({ settled: "rejected", value: err.message }),
  );
  await new Promise((r) => setTimeout(r, 200));
  const abortedAt = Date.now();
  controller.abort();
  const outcome = await checking;
  const ms = Date.now() - abortedAt;
  expect(outcome.settled).toBe("rejected");
  expect(ms).toBeLessThan(1_000);

  // The aborted check was forgotten: the next call reads the package and answers why it is unreadable.
  const again = await hasher.sha256(file, new AbortController().signal);
  expect(again).toMatch(/^unreadable \(/);
  expect(again).not.toMatch(/abort/i);
});
