import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { classifyTransferError } from "@fleet/core/classifyError";
import { rejectionOf } from "@fleet/testing/rejections";
import { LocalStorage } from "./localStorage";

// A destination folder that refuses writes while the root takes them: a real immutable folder
// (chattr +i: refused even to root, EPERM), as a folder with the wrong owner or mode refuses a
// worker running as another user (EACCES). Found by a fault-injection run: with a quarter of
// the user folders read-only, every refusal counted as the destination's as a whole, the
// link's breaker opened for all files, its probe (a write in the root) closed it, and the locked
// folders opened it again: nothing was migrated for as long as they stayed locked.
describe("a destination folder that refuses writes", () => {
  let base: string;
  const locked: string[] = [];
  const lock = (dir: string) => {
    execFileSync("chattr", ["+i", dir]);
    locked.push(dir);
  };

  beforeEach(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), "fleet-locked-"));
    await mkdir(path.join(base, "users/locked"), { recursive: true });
    await mkdir(path.join(base, "users/open"), { recursive: true });
  });
  afterEach(async () => {
    for (const dir of locked.splice(0)) execFileSync("chattr", ["-i", dir]);
    await rm(base, { recursive: true, force: true });
  });

  it("fails its own files (permission-denied, permanent), not the destination; the others are written", async () => {
    lock(path.join(base, "users/locked"));
    const storage = new LocalStorage({ root: base });
    for (const key of ["users/locked/a.txt", "users/locked/new-folder/b.txt"]) {
      const err = await rejectionOf(storage.write(key, Buffer.from("x")));
      const asCopied = classifyTransferError(err, "destination");
      expect([key, asCopied.category, asCopied.retryable]).toEqual([key, "permission-denied", false]);
      expect(asCopied.message).toContain(`the destination folder "users/locked${key.includes("new-folder") ? "/new-folder" : ""}" refuses writes`);
      // Permanent: a plain `fleet migrate retry` leaves it; the message says what retries it.
      expect(asCopied.message).toContain("fleet migrate retry --category permission-denied --include-permanent");
    }
    await storage.write("users/open/c.txt", Buffer.from("c"));
    expect(await readFile(path.join(base, "users/open/c.txt"), "utf8")).toBe("c");
    await storage.close();
  });

  it("a root that refuses writes is still the destination's fault as a whole (storage-unavailable: the breaker's)", async () => {
    const storage = new LocalStorage({ root: base });
    await storage.write("users/open/c.txt", Buffer.from("c"));
    lock(base);
    lock(path.join(base, "users/open"));
    const err = await rejectionOf(storage.write("users/open/d.txt", Buffer.from("d")));
    const asCopied = classifyTransferError(err, "destination");
    expect([asCopied.category, asCopied.retryable]).toEqual(["storage-unavailable", true]);
    await storage.close();
  });
});
