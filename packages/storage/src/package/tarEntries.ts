import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import { extract } from "tar-stream";
import type { Header } from "tar-stream";
import { PermanentError } from "@fleet/core/errors";
import type { Digest } from "../hashing";

/**
 * Reads a tar stream entry by entry without holding it: each entry's body must be consumed
 * (or drained) before the next one arrives. Errors keep their origin apart, because they
 * mean different things: the *source* failing (network, timeout) is the source's classified
 * error and worth a retry; the *bytes* not being a valid tar (bad header checksum, truncated
 * member, missing end) is PermanentError("archive-corrupt").
 */

export interface TarEntry {
  header: Header;
  /**
   * The entry's bytes. Consume all of them before asking for the next entry, and never stop
   * early: abandoning an entry's iterator destroys the whole parser.
   */
  body: AsyncIterable<Buffer>;
}

export interface TarReader {
  entries: AsyncIterable<TarEntry>;
  /** Size and sha256 of every byte read from the source; meaningful once `entries` is done. */
  digest(): Digest;
}

export function readTarEntries(source: Readable, label: string): TarReader {
  const parser = extract();
  const hash = createHash("sha256");
  let size = 0;
  let sourceError: unknown;

  source.on("data", (chunk: Buffer) => {
    hash.update(chunk);
    size += chunk.length;
    if (!parser.write(chunk)) source.pause();
  });
  parser.on("drain", () => source.resume());
  source.on("end", () => parser.end(undefined));
  source.on("error", (err) => {
    sourceError ??= err;
    parser.destroy(err);
  });

  const translate = (err: unknown): unknown => {
    if (sourceError !== undefined) return sourceError;
    if ((err as Error)?.name === "AbortError") return err;
    return new PermanentError("archive-corrupt", `${label}: not a valid tar: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  };

  async function* entries(): AsyncGenerator<TarEntry> {
    try {
      for await (const entry of parser) {
        yield { header: entry.header, body: translated(entry as AsyncIterable<Buffer>) };
      }
      // A source that ended early on its own (no error) ends the parser mid-entry: that is
      // "Unexpected end of data" above; a stream cut exactly between entries ends here, and
      // only the manifest (member count, tar size and sha256) can tell.
    } catch (err) {
      throw translate(err);
    } finally {
      if (!source.destroyed) source.destroy();
    }
  }

  // Errors inside a member (truncated body) surface while its body is read, not between entries.
  async function* translated(body: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    try {
      yield* body;
    } catch (err) {
      throw translate(err);
    }
  }

  let sha256: string | undefined;
  return { entries: entries(), digest: () => ({ size, sha256: (sha256 ??= hash.digest("hex")) }) };
}
