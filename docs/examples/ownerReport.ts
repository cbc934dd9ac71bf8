import { z } from "zod";
import { writeLog } from "@fleet/db/sql/log";
import { defineFleetJob } from "@fleet/jobs/defineFleetJob";

export interface OwnerUsage {
  owner: string;
  files: number;
  bytes: number;
}

/** Bytes migrated per owner, largest first: one report query, one log entry per owner. */
export const ownerReport = defineFleetJob({
  name: "owner-report",
  queue: "maintenance",
  description: "Summarise migrated bytes per owner into migration_log",
  schema: z.object({ top: z.number().int().min(1).max(1_000).default(10) }).strict(),
  dedupeId: () => "owner-report",
  async handle(payload, ctx): Promise<OwnerUsage[]> {
    const { rows } = await ctx.deps.db.query<OwnerUsage>(
      `SELECT coalesce(s.owner, '(none)') AS owner, count(*)::int8 AS files, coalesce(sum(m.size), 0)::int8 AS bytes
         FROM migration_files m JOIN source_files s ON s.id = m.file_id
        WHERE m.status = 'SUCCESS'
        GROUP BY 1 ORDER BY bytes DESC LIMIT $1`,
      [payload.top],
    );
    await writeLog(ctx.deps.db, rows.map((r) => ({ level: "info", job: "owner-report", subject: `owner:${r.owner}`, message: "bytes migrated", details: { ...r } })));
    ctx.log.info({ owners: rows.length }, "owner report written");
    return rows;
  },
});
