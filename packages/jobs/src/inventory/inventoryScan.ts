import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { QUEUES } from "../jobRegistry";
import { storagePrefixField } from "../targetRef";
import { defineFleetJob } from "../defineFleetJob";
import { scanInventory } from "./scanInventory";
import type { ScanResult } from "./scanInventory";

const contract = defineContract({
  queue: QUEUES.maintenance,
  // Touches the systems under maintenance: queued ones wait while the API is locked.
  options: { whileLocked: "wait" },
  description: "List SOURCE_URL and bring source_files in line: new files, changed ones as new versions, vanished ones marked",
  schema: z
    .object({
      prefix: storagePrefixField.optional(),
      restart: z.boolean().optional(),
      // A listing with no file at all, where files are known, fails (an unmounted volume?)
      // unless the source really is empty: then this marks them vanished (as --allow-empty).
      allowEmpty: z.boolean().optional(),
    })
    .strict()
    .default({}),
  dedupeId: () => "inventory-scan",
  // An operator's scan (API, CLI) is kept in PostgreSQL until it ends and queued again if Redis
  // loses it (replayRequests.ts): a scan resumes from its cursor, brings source_files in line
  // whatever ran before, and two never overlap (the inventory lock). The opt-in schedule's runs
  // come back with the scheduler's schedules.
  durable: true,
  // Opt-in: only a live share needs it (SCHEDULE_INVENTORY_SCAN=on, or a cron of its own).
  schedules: [{ id: "inventory-scan", cron: "0 2 * * *", optIn: true, description: "daily 02:00 when turned on: re-scan SOURCE_URL (new, changed, vanished files)" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "inventory-scan": typeof contract;
  }
}

/**
 * The scheduled scan (opt-in: SCHEDULE_INVENTORY_SCAN) that keeps a live share in sync: the
 * same scan as `fleet inventory scan`, of SOURCE_URL. Interrupted (shutdown, cancel, a crash)
 * it resumes from its cursor on the next run; the scheduler's inventory watcher then seeds
 * ranges over the new rows as for any other inventory change.
 */
export const inventoryScan = defineFleetJob("inventory-scan", contract, {
  async handle(payload, ctx): Promise<Omit<ScanResult, "vanishedKeys" | "unreadable"> & { vanishedKeys: string[]; unreadable: string[] }> {
    const result = await scanInventory({
      db: ctx.deps.db,
      source: ctx.deps.source,
      log: ctx.log,
      signal: ctx.signal,
      ...(payload.prefix !== undefined ? { prefix: payload.prefix } : {}),
      ...(payload.restart ? { restart: true } : {}),
      ...(payload.allowEmpty ? { allowEmpty: true } : {}),
      onProgress: (p) => void ctx.progress({ files: p.files, bytes: p.bytes, expected: p.expected }).catch(() => {}),
    });
    // New files (and new versions) go into ranges now, not when the scheduler's idle watcher
    // next looks (up to an hour after a quiet spell).
    if (result.new + result.changed > 0) await ctx.deps.jobs.enqueue("seed-ranges", {});
    // The job's return value is kept in Redis: the first keys only (migration_log has the summary too).
    return { ...result, vanishedKeys: result.vanishedKeys.slice(0, 20), unreadable: result.unreadable.slice(0, 20), skipped: result.skipped.slice(0, 20) };
  },
});
