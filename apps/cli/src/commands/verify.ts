import type { DbPool } from "@fleet/db/pool";
import type { KeyTemplate } from "@fleet/storage/keyTemplate";
import type { Storage } from "@fleet/storage/storage";
import { DestinationHasher, migratedFilesPage, sha256Of } from "@fleet/jobs/migration/migratedFiles";

export interface VerifyResult {
  checked: number;
  mismatches: Array<{ fileId: number; key: string; problem: string }>;
}

/**
 * Independent end-to-end check: for every SUCCESS file, hashes the source and the
 * destination afresh and compares both with the recorded sha256. Reads in pages; bounded
 * concurrency. Where a file is in the destination (key template, packages) and how it is
 * hashed there is the jobs package's (migration/migratedFiles.ts), shared with checksum-audit.
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
  const hasher = new DestinationHasher(destination, keyTemplate);
  let after = 0;
  for (;;) {
    const rows = await migratedFilesPage(db, { afterId: after, limit: 1000 });
    if (rows.length === 0) return result;
    after = rows[rows.length - 1]!.fileId;
    const queue = [...rows];
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        for (let row = queue.shift(); row; row = queue.shift()) {
          const [src, dst] = await Promise.all([sha256Of(source, row.key), hasher.sha256(row)]);
          if (src !== row.sha256) result.mismatches.push({ fileId: row.fileId, key: row.key, problem: `source sha256 ${src} ≠ recorded ${row.sha256}` });
          else if (dst !== row.sha256) result.mismatches.push({ fileId: row.fileId, key: row.key, problem: `destination sha256 ${dst} ≠ recorded ${row.sha256}` });
          result.checked++;
        }
      }),
    );
    onProgress?.(result.checked);
  }
}
