import { classifyError } from "@fleet/core/classifyError";
import { writeLog } from "@fleet/db/sql/log";
import type { Storage } from "@fleet/storage/storage";
import { defineFleetJob } from "../defineFleetJob";
import { unpackPackage } from "./unpackPackage";
import type { UnpackResult } from "./unpackPackage";

/**
 * Restores the files of one package (TRANSFER_MODE=packaged) from the fleet's destination to
 * a target, verifying every member against the manifest (see unpackPackage). Enqueued by an
 * operator, so it is not held to the migration window. The outcome goes to migration_log
 * (subject `package:<manifest key>`): the per-file rows describe the migration into the
 * package, which unpacking does not change.
 */
export const unpack = defineFleetJob("unpack", {
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
