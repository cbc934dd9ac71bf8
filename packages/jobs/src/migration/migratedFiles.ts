import { createHash } from "node:crypto";
import type { Queryable } from "@fleet/db/pool";
import type { KeyTemplate } from "@fleet/storage/keyTemplate";
import type { Storage } from "@fleet/storage/storage";
import { destinationKeyOf } from "./destinationKey";
import { PackageChecker } from "./packageChecker";

/**
 * What a processor needs to look at files that were migrated: read them from the tables, say
 * where each one is in the destination, and hash it again there. `fleet migrate verify` and
 * the checksum-audit job use these; a new processor should too rather than re-derive keys.
 */

/** A SUCCESS row of migration_files with its source_files row: what was copied, where, and its recorded sha256. */
export interface MigratedFile {
  fileId: number;
  /** The source key (source_files.uri). */
  key: string;
  name: string;
  owner: string | null;
  createdAt: Date | null;
  /** sha256 of the bytes written, recorded when the copy was verified. */
  sha256: string;
  size: number;
  /** Where it went: the destination key, or `<package>.tar#<member>` in packaged mode. */
  newUri: string | null;
}

/**
 * One page of migrated (SUCCESS) files after `afterId`, in file id order; `prefix` keeps
 * those whose source key starts with it. Current versions only: a superseded one's object was
 * replaced by its successor's. Reads migration_files joined to source_files only.
 */
export async function migratedFilesPage(db: Queryable, options: { afterId: number; limit: number; prefix?: string }): Promise<MigratedFile[]> {
  const { rows } = await db.query<{ file_id: string; key: string; name: string; owner: string | null; created_at: Date | null; sha256: string; size: string; new_uri: string | null }>(
    `SELECT m.file_id, s.uri AS key, s.name, s.owner, s.created_at, m.sha256, m.size, m.new_uri
       FROM migration_files m JOIN source_files s ON s.id = m.file_id
      WHERE m.status = 'SUCCESS' AND m.file_id > $1 AND ($3::text IS NULL OR starts_with(s.uri, $3::text))
        -- An older version of a file that changed: its object was replaced by the new version's
        -- (found by a new operator: verify reported the new bytes as a mismatch of the old row).
        AND s.superseded_by IS NULL
      ORDER BY m.file_id LIMIT $2`,
    [options.afterId, options.limit, options.prefix ?? null],
  );
  return rows.map((r) => ({ fileId: Number(r.file_id), key: r.key, name: r.name, owner: r.owner, createdAt: r.created_at, sha256: r.sha256, size: Number(r.size), newUri: r.new_uri }));
}

/** Where a migrated file is in the destination. */
export type DestinationLocation = { kind: "object"; key: string } | { kind: "packaged"; newUri: string };

/**
 * The destination of a migrated file: inside its package when it was shipped packaged
 * (TRANSFER_MODE=packaged), else the key DESTINATION_KEY_TEMPLATE gives it (its source key
 * without a template). Pass the template the files were migrated with (`ctx.deps.settings.keyTemplate`).
 */
export function destinationOf(file: Pick<MigratedFile, "fileId" | "key" | "name" | "owner" | "createdAt" | "newUri">, keyTemplate: KeyTemplate | undefined): DestinationLocation {
  if (PackageChecker.isPackaged(file.newUri)) return { kind: "packaged", newUri: file.newUri! };
  return { kind: "object", key: destinationKeyOf(keyTemplate, { id: file.fileId, key: file.key, name: file.name, owner: file.owner, createdAt: file.createdAt }) };
}

/** sha256 (hex) of an object, streamed; `unreadable (…)` saying why when it cannot be read. */
export async function sha256Of(storage: Storage, key: string, signal?: AbortSignal): Promise<string> {
  try {
    const hash = createHash("sha256");
    for await (const chunk of await storage.createReadStream(key, { signal })) {
      signal?.throwIfAborted();
      hash.update(chunk as Buffer);
    }
    return hash.digest("hex");
  } catch (err) {
    if (signal?.aborted) throw err;
    return `unreadable (${(err as Error).message})`;
  }
}

/**
 * Hashes migrated files again where they are in the destination. A packaged file is checked
 * inside its package (the whole package against its manifest, as unpack does; the manifest's
 * sha256 for the file is the answer); the last few packages are remembered, so files in id
 * order read each package once.
 */
export class DestinationHasher {
  private readonly packages: PackageChecker;

  constructor(
    private readonly destination: Storage,
    private readonly keyTemplate: KeyTemplate | undefined,
  ) {
    this.packages = new PackageChecker(destination);
  }

  /** The destination's sha256 of the file now, or `unreadable (…)`. */
  async sha256(file: MigratedFile, signal?: AbortSignal): Promise<string> {
    const where = destinationOf(file, this.keyTemplate);
    return where.kind === "packaged" ? this.packages.memberSha256(where.newUri, file.fileId, signal) : sha256Of(this.destination, where.key, signal);
  }
}
