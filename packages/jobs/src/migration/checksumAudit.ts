import { createHash } from "node:crypto";
import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { PermanentError } from "@fleet/core/errors";
import { writeLog } from "@fleet/db/sql/log";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import { DestinationHasher, migratedFilesPage } from "./migratedFiles";

export interface AuditResult {
  checked: number;
  mismatched: number;
}

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Hash migrated files again in the destination and compare with the recorded sha256",
  schema: z.object({ prefix: z.string().max(1_024), limit: z.number().int().min(1).max(100_000).default(1_000) }).strict(),
  dedupeId: (p) => `checksum-audit-${createHash("sha256").update(p.prefix).digest("hex").slice(0, 16)}`,
  // An operator's audit is kept in PostgreSQL until it ends and queued again if Redis loses it
  // (replayRequests.ts): it only reads the destination, so running it again costs time, and
  // at most repeats a mismatch's migration_log row.
  durable: true,
  // Opt-in (SCHEDULE_CHECKSUM_AUDIT=on): a daily sample of the destination against the recorded hashes.
  schedules: [{ id: "checksum-audit", cron: "15 4 * * *", optIn: true, payload: { prefix: "", limit: 1_000 }, description: "daily 04:15 when turned on: hash 1,000 migrated files again in the destination" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "checksum-audit": typeof contract;
  }
}

/**
 * Hashes up to `limit` migrated files under `prefix` (source keys) again where they are in the
 * destination — through DESTINATION_KEY_TEMPLATE, inside their package when packaged — and
 * compares each with the sha256 recorded when it was copied. Every mismatch is a migration_log
 * error; any mismatch fails the job (checksum-mismatch, no retry) so the board shows it red.
 */
export const checksumAudit = defineFleetJob("checksum-audit", contract, {
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
