import { PermanentError } from "@fleet/core/errors";
import { writeLog } from "@fleet/db/sql/log";
import { defineFleetJob } from "../defineFleetJob";
import { DestinationHasher, migratedFilesPage } from "./migratedFiles";

export interface AuditResult {
  checked: number;
  mismatched: number;
}

/**
 * Hashes up to `limit` migrated files under `prefix` (source keys) again where they are in the
 * destination — through DESTINATION_KEY_TEMPLATE, inside their package when packaged — and
 * compares each with the sha256 recorded when it was copied. Every mismatch is a migration_log
 * error; any mismatch fails the job (checksum-mismatch, no retry) so the board shows it red.
 */
export const checksumAudit = defineFleetJob("checksum-audit", {
  async handle(payload, ctx): Promise<AuditResult> {
    const { db, destination, settings } = ctx.deps;
    const hasher = new DestinationHasher(destination, settings.keyTemplate);
    const result: AuditResult = { checked: 0, mismatched: 0 };
    let afterId = 0;
    while (result.checked < payload.limit) {
      const files = await migratedFilesPage(db, { afterId, limit: Math.min(500, payload.limit - result.checked), prefix: payload.prefix });
      if (files.length === 0) break;
      for (const file of files) {
        ctx.signal.throwIfAborted();
        const now = await hasher.sha256(file, ctx.signal);
        result.checked++;
        if (now === file.sha256) continue;
        result.mismatched++;
        await writeLog(db, [{ level: "error", job: "checksum-audit", subject: `file:${file.fileId}`, message: "destination differs from the recorded sha256", details: { key: file.key, recorded: file.sha256, now } }]);
      }
      afterId = files.at(-1)!.fileId;
      await ctx.progress({ checked: result.checked, mismatched: result.mismatched });
    }
    ctx.log.info({ ...result, prefix: payload.prefix }, "checksum audit done");
    if (result.mismatched > 0) throw new PermanentError("checksum-mismatch", `${result.mismatched} of ${result.checked} files differ from their recorded sha256 (see migration_log)`);
    return result;
  },
});
