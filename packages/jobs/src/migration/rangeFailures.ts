import { PermanentError } from "@fleet/core/errors";
import type { FleetError } from "@fleet/core/errors";
import type { Logger } from "@fleet/core/logger";
import type { Queryable } from "@fleet/db/pool";
import { rangeFailures } from "@fleet/db/sql/failures";

/**
 * How a range's failed files reach the operator: each failed file once at warn (path, category,
 * message) — the first FILES_LOGGED of a range one by one, the rest as one line of counts per
 * category, so a mass failure (a share gone) stays readable — and, when the range completes
 * with failed files, its job fails with the counts and an example per category (bull-board
 * shows it red in Failed, with the same lines in the job's log), instead of a green job whose
 * failures only psql could find.
 */
export const FILES_LOGGED = 20;

export class FailureLog {
  private logged = 0;
  private readonly unlogged = new Map<string, number>();

  constructor(
    private readonly log: Logger,
    private readonly fields: { rangeId?: number; job: string },
    private readonly limit = FILES_LOGGED,
  ) {}

  record(fileId: number, path: string, error: FleetError): void {
    if (this.logged < this.limit) {
      this.logged++;
      this.log.warn({ ...this.fields, fileId, path, category: error.category, retryable: error.retryable, message: error.message }, "file failed");
      return;
    }
    this.unlogged.set(error.category, (this.unlogged.get(error.category) ?? 0) + 1);
  }

  /** One line for the failures not logged one by one (call once at the end). */
  flush(): void {
    if (this.unlogged.size === 0) return;
    const byCategory = Object.fromEntries(this.unlogged);
    const files = [...this.unlogged.values()].reduce((a, b) => a + b, 0);
    this.log.warn({ ...this.fields, files, byCategory }, "more files failed (not logged one by one; see fleet migrate failures)");
    this.unlogged.clear();
  }
}

/**
 * Throws PermanentError("files-failed") when the range has FAIL files, after writing the
 * summary to the job's log. The range itself stays COMPLETE: only the job says "not all well".
 * A re-run of the job (bull-board's retry) fails the same way until the files are fixed.
 */
export async function failIfFilesFailed(db: Queryable, rangeId: number, totalFiles: number | undefined, note?: (line: string) => Promise<void>): Promise<void> {
  const summary = await rangeFailures(db, rangeId);
  if (summary.failed === 0) return;
  const categories = summary.byCategory.map((c) => `${c.category} ${c.files}`).join(", ");
  const of = totalFiles !== undefined ? ` of ${(totalFiles).toLocaleString("en-US")}` : "";
  const headline = `range ${rangeId} completed with ${summary.failed.toLocaleString("en-US")}${of} files failed (${categories}); see \`fleet migrate failures --range ${rangeId}\``;
  if (note) {
    await note(headline);
    for (const c of summary.byCategory) await note(`${c.category}: ${c.files} files, e.g. ${c.example.path}: ${c.example.message ?? ""}`);
  }
  throw new PermanentError("files-failed", headline);
}
