import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { classifyError, describe } from "@fleet/core/classifyError";
import { writeLog } from "@fleet/db/sql/log";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import type { RemoteRunResult } from "./remoteServers";


const DAY_MS = 24 * 3_600_000;

const contract = defineContract({
  queue: QUEUES.remote,
  // Touches the systems under maintenance: queued ones wait while the API is locked.
  options: { whileLocked: "wait" },
  description: "Run a registered command on a registered SSH server",
  schema: z
    .object({
      server: z.string().min(1).max(256),
      command: z.string().min(1).max(256),
      // Refused at submission: no command argument can carry a NUL byte, and none is longer
      // than 64 KiB (Linux refuses arguments over 128 KiB; a payload's text is bounded anyway).
      values: z
        .record(z.string().max(256), z.string().max(65_536).refine((v) => !v.includes("\0"), "a value cannot contain a NUL byte (no command argument can carry one)"))
        .refine((values) => Object.keys(values).length <= 256, "at most 256 values")
        .default({}),
      /** Overrides the server's timeout for this run. */
      timeoutMs: z.number().int().positive().max(DAY_MS).optional(),
    })
    .strict(),
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "remote-command": typeof contract;
  }
}

/**
 * Runs one registered command on one registered SSH server (SSH_SERVERS_FILE): start an
 * export, watch a sync, check free space. The payload names both and gives values for the
 * command's `{placeholders}` (each shell-quoted); it never carries a command line. The exit
 * is classified by the server's error patterns: permanent → failed at once, retryable → the
 * job's backoff. Every run, successful or not, leaves a migration_log row.
 */
export const remoteCommand = defineFleetJob("remote-command", contract, {
  async handle(payload, ctx): Promise<RemoteRunResult> {
    const subject = `remote:${payload.server}:${payload.command}`;
    const job = `remote-command:${ctx.job.id ?? "?"}`;
    try {
      const result = await ctx.deps.remote.run(payload.server, payload.command, payload.values, {
        signal: ctx.signal,
        ...(payload.timeoutMs ? { timeoutMs: payload.timeoutMs } : {}),
      });
      ctx.log.info({ server: payload.server, command: payload.command, exitCode: result.exitCode, durationMs: result.durationMs }, "remote command done");
      await writeLog(ctx.deps.db, [
        { level: "info", job, subject, message: `exit ${result.exitCode} in ${result.durationMs} ms`, details: { value: result.value ?? null, truncated: result.truncated } },
      ]);
      return result;
    } catch (err) {
      const error = classifyError(err);
      await writeLog(ctx.deps.db, [
        { level: "error", job, subject, message: describe(error), details: { category: error.category, retryable: error.retryable, attempt: ctx.job.attempt } },
      ]).catch((logErr: unknown) => ctx.log.warn({ err: logErr }, "could not log the remote command's failure"));
      throw error;
    }
  },
});
