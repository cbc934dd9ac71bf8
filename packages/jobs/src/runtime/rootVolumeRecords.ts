import { classifyError } from "@fleet/core/classifyError";
import { PermanentError, RetryableError } from "@fleet/core/errors";
import type { PermanentCategory } from "@fleet/core/errors";
import type { Queryable } from "@fleet/db/pool";
import { noteRootVolume, recalledRootVolume } from "@fleet/db/sql/rootVolumes";
import type { VolumeRecords } from "@fleet/storage/volumeRecords";

/**
 * The storages' volume records (see packages/storage/src/volumeRecords.ts) in PostgreSQL's
 * root_volumes. `db` is asked for on use: the runtime opens storages before its pool. A failed
 * query is the database's fault (retryable `database`, even when the driver says ECONNREFUSED,
 * which alone reads as `network`), not the storage's: it must not open the link's breaker, nor
 * be taken for a root without a record.
 */
export function rootVolumeRecords(db: () => Queryable, seenBy: string): VolumeRecords {
  return {
    note: (root, mountPoint) => asked(`record the volume of ${root}`, () => noteRootVolume(db(), root, mountPoint, seenBy)),
    recall: (root) => asked(`look up the volume of ${root}`, () => recalledRootVolume(db(), root)),
  };
}

async function asked<T>(what: string, query: () => Promise<T>): Promise<T> {
  try {
    return await query();
  } catch (err) {
    const error = classifyError(err);
    const message = `${what} (root_volumes): ${error.message}`;
    throw error.retryable ? new RetryableError("database", message, { cause: err }) : new PermanentError(error.category as PermanentCategory, message, { cause: err });
  }
}
