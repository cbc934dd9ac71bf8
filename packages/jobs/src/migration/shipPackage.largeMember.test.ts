import { classifyTransferError } from "@fleet/core/classifyError";
import type { SourceFileRow } from "@fleet/db/sql/files";
import { NullStorage } from "@fleet/storage/null/nullStorage";
import { shipPackage } from "./shipPackage";
import type { PackageSettings } from "./shipPackage";

// A file over 2 GiB gets a package of its own (packageRange cuts before
// PACKAGE_MAX_BYTES, a larger file alone). Shipping it must work like any other member.
// Generated source and a destination that hashes and discards: nothing touches the disk.

const settings: PackageSettings = { smallFileBytes: 64 * 1024, verify: "write", ifExists: "fail", copyConcurrency: 8 };

it("ships a 2 GiB + 100 B file as a package of its own", async () => {
  const size = 2 * 2 ** 30 + 100;
  const source = new NullStorage({ zeroBytes: size });
  const destination = new NullStorage();
  const files: SourceFileRow[] = [{ id: 1, uri: "video/big.mov", name: "big.mov", size, owner: null, createdAt: new Date("2024-01-01T00:00:00Z") }];
  const outcome = await shipPackage(source, destination, 1, files, settings, new AbortController().signal).then(
    (shipped) => ({ ok: shipped.results.map((r) => r.ok), tarSize: shipped.manifest?.tar.size }),
    (err: unknown) => {
      const e = classifyTransferError(err, "destination"); // as packageRange does
      return { error: `${e.category}: ${e.message}` };
    },
  );
  expect(outcome).toEqual({ ok: [true], tarSize: 512 + (size - 100 + 512) + 1024 });
}, 180_000);
