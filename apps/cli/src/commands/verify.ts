import { createHash } from "node:crypto";
import type { DbPool } from "@fleet/db/pool";
import type { KeyTemplate } from "@fleet/storage/keyTemplate";
import type { Storage } from "@fleet/storage/storage";
import { destinationKeyOf } from "@fleet/jobs/migration/destinationKey";
import { PackageChecker } from "./verifyPackages";

export interface VerifyResult {
  checked: number;
  mismatches: Array<{ fileId: number; key: string; problem: string }>;
}

/**
 * Independent end-to-end check: for every SUCCESS file, hashes the source and the
 * destination afresh and compares both with the recorded sha256. Reads in pages; bounded
 * concurrency. A packaged file (TRANSFER_MODE=packaged) is checked inside its package: the
 * whole package against its manifest, and the manifest's sha256 for the file against its row.
 */
export async function verifyMigration(
  db: DbPool,
  source: Storage,
  destination: Storage,
  onProgress?: (n: number) => void,
  /** DESTINATION_KEY_TEMPLATE, when files were written under other keys than their source's. */
  keyTemplate?: KeyTemplate,
): Promise<VerifyResult> {
  const result: VerifyResult = { checked: 0, mismatches: [] };
  const packages = new PackageChecker(destination);
  let after = 0;
  for (;;) {
    const { rows } = await db.query<{ file_id: number; key: string; name: string; owner: string | null; created_at: Date; sha256: string; size: number; new_uri: string | null }>(
      `SELECT m.file_id, s.uri AS key, s.name, s.owner, s.created_at, m.sha256, m.size, m.new_uri FROM migration_files m JOIN source_files s ON s.id = m.file_id
        WHERE m.status = 'SUCCESS' AND m.file_id > $1 ORDER BY m.file_id LIMIT 1000`,
      [after],
    );
    if (rows.length === 0) return result;
    after = rows[rows.length - 1]!.file_id;
    const queue = [...rows];
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        for (let row = queue.shift(); row; row = queue.shift()) {
          const inPackage = PackageChecker.isPackaged(row.new_uri);
          const [src, dst] = await Promise.all([
            hashOf(source, row.key),
            inPackage ? packages.memberSha256(row.new_uri!, Number(row.file_id)) : hashOf(destination, destinationKeyOf(keyTemplate, { id: Number(row.file_id), key: row.key, name: row.name, owner: row.owner, createdAt: row.created_at })),
          ]);
          if (src !== row.sha256) result.mismatches.push({ fileId: row.file_id, key: row.key, problem: `source sha256 ${src} ≠ recorded ${row.sha256}` });
          else if (dst !== row.sha256) result.mismatches.push({ fileId: row.file_id, key: row.key, problem: `destination sha256 ${dst} ≠ recorded ${row.sha256}` });
          result.checked++;
        }
      }),
    );
    onProgress?.(result.checked);
  }
}

async function hashOf(storage: Storage, key: string): Promise<string> {
  try {
    const hash = createHash("sha256");
    for await (const chunk of await storage.createReadStream(key)) hash.update(chunk as Buffer);
    return hash.digest("hex");
  } catch (err) {
    return `unreadable (${(err as Error).message})`;
  }
}
