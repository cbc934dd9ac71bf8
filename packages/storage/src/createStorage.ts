import path from "node:path";
import { fileURLToPath } from "node:url";
import { PermanentError } from "@fleet/core/errors";
import { LocalStorage } from "./localStorage";
import { NullStorage } from "./nullStorage";
import type { Storage } from "./storage";

// "scheme://" or the bare "null:". Anything else is a path, so a relative folder named like
// "backup:2024" still works.
const URL_LIKE = /^([A-Za-z][A-Za-z0-9+.-]*):(\/\/|$)/;
// The null storage that reads every key as zeros (a source needing no disk, for benchmarks).
const NULL_ZERO = /^null:zero(?:\?size=(\d{1,10}))?$/i;

/**
 * The adapter for a storage URL from config: a plain path or `file:///abs` (a local
 * directory), `null:` (keeps nothing, for benchmarks) or `null:zero[?size=N]` (keeps nothing;
 * every key reads as N zero bytes, default 0: a source for benchmarks of the bookkeeping).
 * S3 and SFTP adapters are added here when they exist.
 */
export function createStorage(url: string): Storage {
  if (url.trim() === "") throw new PermanentError("bad-config", "storage URL is empty");
  const zero = NULL_ZERO.exec(url.trim());
  if (zero) return new NullStorage({ zeroBytes: Number(zero[1] ?? 0) });
  const match = URL_LIKE.exec(url);
  if (!match) return new LocalStorage({ root: path.resolve(url) });
  const scheme = (match[1] ?? "").toLowerCase();
  if (scheme === "null") return new NullStorage();
  if (scheme === "file") {
    let root: string;
    try {
      root = fileURLToPath(url);
    } catch (err) {
      throw new PermanentError("bad-config", `storage URL ${url} is not a local file URL (file:///absolute/path)`, {
        cause: err,
      });
    }
    return new LocalStorage({ root });
  }
  // The URL itself is left out: sftp:// and s3:// URLs may carry credentials.
  throw new PermanentError(
    "bad-config",
    `storage URL scheme ${scheme} is not supported yet (supported: a local path, file:///absolute/path, null:, null:zero?size=N)`,
  );
}
