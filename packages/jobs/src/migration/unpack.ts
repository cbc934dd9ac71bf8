import { createHash } from "node:crypto";
import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { classifyError } from "@fleet/core/classifyError";
import { writeLog } from "@fleet/db/sql/log";
import type { Storage } from "@fleet/storage/storage";
import { QUEUES } from "../jobRegistry";
import { storageKeyField, targetRefField } from "../targetRef";
import { defineFleetJob } from "../defineFleetJob";
import { unpackPackage } from "./unpackPackage";
import type { UnpackResult } from "./unpackPackage";

const contract = defineContract({
  queue: QUEUES.migration,
  // Touches the systems under maintenance: queued ones wait while the API is locked.
  options: { whileLocked: "wait" },
  description: "Restore and verify the files of one package (manifest key) at the destination or a configured target storage",
  schema: z
    .object({
      /** Key of the package's manifest in the destination, e.g. `.fleet-packages/range-3/part-41-90.manifest.json`. */
      manifest: storageKeyField.endsWith(".manifest.json"),
      /**
       * Where to restore: a configured storage name (`destination` or a TARGET_STORAGES name),
       * optionally with a folder under it (`restore/alice`); never a URL or a path. Default:
       * the destination itself (members next to the packages).
       */
      target: targetRefField.optional(),
      /** A member that exists at the target with other content: fail (destination-exists) or overwrite; default IF_EXISTS. */
      ifExists: z.enum(["fail", "overwrite"]).optional(),
    })
    .strict(),
  // The same unpack asked twice while it waits or runs is one job; once finished it can be run
  // again (a re-run finds identical members unchanged).
  dedupeId: (p) => `unpack-${createHash("sha256").update(`${p.manifest}\n${p.target ?? ""}`).digest("hex").slice(0, 24)}`,
  // Kept in PostgreSQL until it ends and queued again if Redis loses it (replayRequests.ts):
  // nothing else re-derives an operator's unpack, and a re-run is safe (members already
  // restored are found identical and left; each is verified against the manifest).
  durable: true,
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "unpack": typeof contract;
  }
}

/**
 * Restores the files of one package (TRANSFER_MODE=packaged) from the fleet's destination to
 * a target, verifying every member against the manifest (see unpackPackage). Enqueued by an
 * operator, so it is not held to the migration window. The outcome goes to migration_log
 * (subject `package:<manifest key>`): the per-file rows describe the migration into the
 * package, which unpacking does not change.
 */
export const unpack = defineFleetJob("unpack", contract, {
  async handle(payload, ctx): Promise<UnpackResult> {
    const { deps, log, signal } = ctx;
    const subject = `package:${payload.manifest}`;
    let target: Storage | undefined;
    try {
      target = payload.target ? deps.openTarget(payload.target) : deps.destination;
      const result = await unpackPackage({
        packages: deps.destination,
        manifestKey: payload.manifest,
        target,
        ifExists: payload.ifExists ?? deps.settings.ifExists,
        smallFileBytes: deps.settings.smallFileBytes,
        concurrency: deps.settings.copyConcurrency,
        signal,
        log,
      });
      await writeLog(deps.db, [{ level: "info", job: "unpack", subject, message: "package unpacked", details: { ...result } }]).catch((err: unknown) =>
        log.warn({ err, manifest: payload.manifest }, "could not write migration_log entry"),
      );
      return result;
    } catch (err) {
      const error = classifyError(err);
      await writeLog(deps.db, [
        {
          level: error.retryable ? "warn" : "error",
          job: "unpack",
          subject,
          message: error.retryable ? "unpack attempt failed; will retry" : "unpack failed",
          details: { category: error.category, error: error.message, target: target?.label ?? payload.target ?? deps.destination.label },
        },
      ]).catch((logErr: unknown) => log.warn({ err: logErr, manifest: payload.manifest }, "could not write migration_log entry"));
      throw err;
    } finally {
      if (target && target !== deps.destination) await target.close().catch((err: unknown) => log.warn({ err }, "could not close the unpack target"));
    }
  },
});
