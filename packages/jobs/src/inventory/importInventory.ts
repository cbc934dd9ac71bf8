import { z } from "zod";
import { RetryableError } from "@fleet/core/errors";
import type { Logger } from "@fleet/core/logger";
import { formatZodIssues } from "@fleet/core/zodIssues";
import type { DbPool } from "@fleet/db/pool";
import { inTransaction } from "@fleet/db/pool";
import { emptyMergeCounts, mergeListedFiles, tryInventoryLock } from "@fleet/db/sql/inventory";
import type { ListedFile, MergeCounts } from "@fleet/db/sql/inventory";
import { writeLog } from "@fleet/db/sql/log";
import { validateKey } from "@fleet/storage/keys";
import type { RawRecord } from "./importFormats";

/**
 * `fleet inventory import FILE`: inventory lines (uri, size, owner, optional sha256) merged
 * into source_files exactly as a scan's listing is (new files added, changed ones as new
 * versions, the same file again changes nothing), so importing a file twice is harmless. Bad
 * lines are reported with their line number and skipped; the good ones are imported.
 */
export interface ImportResult extends MergeCounts {
  /** Lines with a record (good and bad). */
  records: number;
  imported: number;
  rejected: number;
  /** The first errors, by line. */
  errors: Array<{ line: number; message: string }>;
}

const MAX_ERRORS = 1_000;

const lineSchema = z
  .object({
    uri: z.string().trim().min(1, "required"),
    size: z.unknown().transform((v, ctx) => {
      const n = typeof v === "number" ? v : typeof v === "string" && /^\s*\d+\s*$/.test(v) ? Number(v) : Number.NaN;
      if (Number.isSafeInteger(n) && n >= 0) return n;
      ctx.addIssue({ code: "custom", message: "expected a whole number of bytes" });
      return z.NEVER;
    }),
    owner: z.string().trim().nullish().transform((v) => (v ? v : null)),
    sha256: z
      .string()
      .trim()
      .nullish()
      .transform((v) => (v ? v.toLowerCase() : null))
      .refine((v) => v === null || /^[0-9a-f]{64}$/.test(v), "expected 64 hexadecimal digits"),
  })
  .passthrough();

export async function importInventory(db: DbPool, records: AsyncIterable<RawRecord>, options: { log: Logger; batchSize?: number; file?: string }): Promise<ImportResult> {
  const batchSize = options.batchSize ?? 5_000;
  const release = await tryInventoryLock(db);
  if (!release) throw new RetryableError("lock-contention", "another inventory scan or import is running; try again when it has finished");
  const result: ImportResult = { ...emptyMergeCounts(), records: 0, imported: 0, rejected: 0, errors: [] };
  const reject = (line: number, message: string) => {
    result.rejected++;
    if (result.errors.length < MAX_ERRORS) result.errors.push({ line, message });
  };
  // Line of each key so far: a key twice in one file is a mistake, not a new version.
  const firstLine = new Map<string, number>();
  let batch: ListedFile[] = [];
  const flush = async () => {
    const full = batch;
    batch = [];
    const counts = await inTransaction(db, (client) => mergeListedFiles(client, full, null));
    for (const k of ["new", "changed", "reappeared", "unchanged", "bytes"] as const) result[k] += counts[k];
    result.imported += full.length;
  };
  try {
    for await (const raw of records) {
      result.records++;
      if (raw.error !== undefined || !raw.record) {
        reject(raw.line, raw.error ?? "empty record");
        continue;
      }
      const parsed = lineSchema.safeParse(raw.record);
      if (!parsed.success) {
        reject(raw.line, formatZodIssues(parsed.error.issues));
        continue;
      }
      let uri: string;
      try {
        uri = validateKey(parsed.data.uri);
      } catch (err) {
        reject(raw.line, `uri: ${(err as Error).message}`);
        continue;
      }
      const earlier = firstLine.get(uri);
      if (earlier !== undefined) {
        reject(raw.line, `uri: ${JSON.stringify(uri)} is already on line ${earlier}`);
        continue;
      }
      firstLine.set(uri, raw.line);
      batch.push({ uri, size: parsed.data.size, owner: parsed.data.owner, sha256: parsed.data.sha256 });
      if (batch.length >= batchSize) await flush();
    }
    if (batch.length > 0) await flush();
  } finally {
    await release();
  }
  const { errors: _errors, ...summary } = result;
  options.log.info({ ...summary, file: options.file }, "inventory import finished");
  await writeLog(db, [
    { level: result.rejected > 0 ? "warn" : "info", job: "inventory-import", subject: `inventory:${options.file ?? "import"}`, message: "inventory import finished", details: { ...summary, errors: result.errors.slice(0, 100) } },
  ]).catch((err: unknown) => options.log.warn({ err }, "could not write migration_log entry"));
  return result;
}
