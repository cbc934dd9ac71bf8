import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import type { JobContext } from "@fleet/core/jobDefinition";
import { classifyError, describe } from "@fleet/core/classifyError";
import { DelayJob } from "@fleet/core/delayJob";
import { RetryableError } from "@fleet/core/errors";
import type { FleetError } from "@fleet/core/errors";
import { readLog, writeLog } from "@fleet/db/sql/log";
import type { LogEntry } from "@fleet/db/sql/log";
import type { FleetDeps } from "../deps";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import type { RemoteRunResult } from "./remoteServers";


const DAY_MS = 24 * 3_600_000;

const contract = defineContract({
  queue: QUEUES.remote,
  // Touches the systems under maintenance: queued ones wait while the API is locked.
  options: { whileLocked: "wait" },
  description: "Run a registered command on a registered SSH server",
  // Nothing in PostgreSQL re-derives a request: it is kept there until it ends, and queued
  // again when Redis loses its job (see replayRequests.ts).
  durable: true,
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
 * job's backoff. A server that cannot be reached (nothing ran) is waited for, no attempt used.
 * Every start, every run's outcome, successful or not, and every wait leaves a migration_log row.
 */
export const remoteCommand = defineFleetJob("remote-command", contract, {
  async handle(payload, ctx): Promise<RemoteRunResult> {
    const subject = `remote:${payload.server}:${payload.command}`;
    const job = `remote-command:${ctx.job.id ?? "?"}`;
    const [previous] = await readLog(ctx.deps.db, { job, limit: 1 });
    await recordStart(ctx, { job, subject }, previous);
    let result: RemoteRunResult;
    try {
      result = await ctx.deps.remote.run(payload.server, payload.command, payload.values, {
        signal: ctx.signal,
        ...(payload.timeoutMs ? { timeoutMs: payload.timeoutMs } : {}),
      });
    } catch (err) {
      const unreachable = serverUnreachable(err, ctx.signal);
      const wait = unreachable && (await waitForServer(ctx, payload.server, { job, subject }, unreachable, previous));
      if (wait) throw wait;
      const error = classifyError(err);
      // Past REMOTE_SERVER_WAIT_MAX: the wait's start is kept, so the next try uses an attempt too.
      const waitingSince = unreachable ? waitingSinceOf(previous) : undefined;
      await recordRun(ctx, { level: "error", job, subject, message: describe(error), details: { category: error.category, retryable: error.retryable, attempt: ctx.job.attempt, ...(waitingSince !== undefined ? { waitingSince: new Date(waitingSince).toISOString() } : {}) } });
      throw error;
    }
    ctx.log.info({ server: payload.server, command: payload.command, exitCode: result.exitCode, durationMs: result.durationMs }, "remote command done");
    await recordRun(ctx, { level: "info", job, subject, message: `exit ${result.exitCode} in ${result.durationMs} ms`, details: { value: result.value ?? null, truncated: result.truncated } });
    // Done: defineFleetJob forgets the kept request (a durable kind's).
    return result;
  },
});

/**
 * Writes, before the command may run, that it starts: a run whose worker dies or stops
 * answering mid-command (its command killed when the connection drops) leaves this row as the
 * job's last, and the run that BullMQ hands the job on to says so before it runs the command
 * again. Without it the first
 * run was recorded nowhere (found by the fault probe: SIGKILL mid-command, one `exit 0` row for
 * two runs). PostgreSQL down here delays the job, nothing run.
 */
async function recordStart(ctx: JobContext<FleetDeps>, row: { job: string; subject: string }, previous: JobLogRow | undefined): Promise<void> {
  const entries: LogEntry[] = [];
  if (previous?.details?.starting === true) {
    const message = `the run that started at ${previous.at.toISOString()} (attempt ${String(previous.details.attempt ?? "?")}) left no outcome: its worker died or stopped answering mid-command; running it again`;
    ctx.log.warn({ job: row.job, startedAt: previous.at }, "remote command's previous run left no outcome (its worker died or stopped answering): running it again");
    entries.push({ level: "warn", ...row, message, details: { previousStart: previous.at.toISOString(), attempt: ctx.job.attempt } });
  }
  entries.push({ level: "info", ...row, message: `starting (attempt ${ctx.job.attempt})`, details: { starting: true, attempt: ctx.job.attempt } });
  await writeLog(ctx.deps.db, entries);
}

type JobLogRow = LogEntry & { at: Date };

/** When the job began waiting for its unreachable server, from its last row (a wait, or a try past the wait's limit). */
function waitingSinceOf(previous: JobLogRow | undefined): number | undefined {
  const text = previous?.details?.waitingSince;
  const at = typeof text === "string" ? Date.parse(text) : Number.NaN;
  return Number.isNaN(at) ? undefined : at;
}

/** Failures to reach the server at all; never the command's own. */
const UNREACHABLE_CATEGORIES = new Set(["network", "timeout", "unavailable"]);

/**
 * The error as the server being unreachable, nothing run (refused, unreachable, handshake timed
 * out, the server refusing a session), or undefined. An error carrying the command's result (it
 * ran: exited, timed out, or its connection dropped midway) is the run's own: a retry of it uses
 * an attempt, as does a job stopped (interrupted).
 */
function serverUnreachable(err: unknown, signal: AbortSignal): FleetError | undefined {
  const error = classifyError(err);
  if (signal.aborted || !UNREACHABLE_CATEGORIES.has(error.category)) return undefined;
  for (let current: unknown = err, depth = 0; current && depth < 6; current = (current as { cause?: unknown }).cause, depth++) {
    if ((current as { result?: unknown }).result !== undefined) return undefined;
  }
  return error;
}

/**
 * A server that cannot be reached is not the command's failure: the job waits for it without
 * using an attempt, looking again after each delay of BREAKER_PROBE_SCHEDULE (the last repeats),
 * for as long as the outage lasts (up to REMOTE_SERVER_WAIT_MAX: then undefined, and the looks
 * use attempts again), and says so in migration_log at each look. With the job's
 * backoff instead (found by the fault probe) an sshd back after a minute was tried again only at
 * the next step of BACKOFF_SCHEDULE (5 min, then 10, 30, 60), and an outage of ~1 h 45 min
 * failed the job for good. The count of looks so far is in the job's last log row before this
 * try's start (`previous`).
 */
async function waitForServer(ctx: JobContext<FleetDeps>, server: string, row: { job: string; subject: string }, unreachable: FleetError, previous: JobLogRow | undefined): Promise<DelayJob | undefined> {
  const waits = (typeof previous?.details?.serverWaits === "number" ? previous.details.serverWaits : 0) + 1;
  // Since the first look that found it unreachable; past REMOTE_SERVER_WAIT_MAX the looks use
  // attempts again (the caller records the run's error and throws it): a server retired or
  // mistyped must end the job some day, not leave it looking (and logging) every 30 s for good.
  const since = waitingSinceOf(previous) ?? Date.now();
  if (Date.now() - since > ctx.deps.settings.remoteServerWaitMaxMs) return undefined;
  const schedule = ctx.deps.settings.breakerProbeScheduleMs;
  const delayMs = schedule[Math.min(waits, schedule.length) - 1] ?? 30_000;
  const message = `server ${server} unreachable, nothing ran (${describe(unreachable)}): trying again in ${delayMs} ms, no attempt used`;
  ctx.log.warn({ server, category: unreachable.category, waits, delayMs }, "remote command's server unreachable: waiting for it");
  await writeLog(ctx.deps.db, [{ level: "warn", ...row, message, details: { category: unreachable.category, serverWaits: waits, waitingSince: new Date(since).toISOString(), attempt: ctx.job.attempt } }]);
  return new DelayJob(new Date(Date.now() + delayMs), message);
}

/**
 * The row of a run, written before the job ends. Nothing after a command that ran may throw a
 * retryable error of its own: the job would run again, and so would the command (found by the
 * fault probe: PostgreSQL down for 8 s as a 4 s export ended ran it three times, "database
 * unavailable: job delayed, no attempt used" after each). So the row is tried again while the
 * database is unavailable, every 0.5 s at first and 10 s at most, for as long as it takes; a
 * job stopped meanwhile (shutdown, cancel) ends without it, the outcome in the worker's log
 * (and, for a command that succeeded, the job's return value).
 */
async function recordRun(ctx: JobContext<FleetDeps>, row: LogEntry): Promise<void> {
  for (let waitMs = 500, warned = false; ; waitMs = Math.min(waitMs * 2, 10_000)) {
    try {
      await writeLog(ctx.deps.db, [row]);
      return;
    } catch (err) {
      const down = err instanceof RetryableError && err.category === "database";
      if (!down || ctx.signal.aborted) {
        ctx.log.error({ err, row }, "could not write the remote command's migration_log row (its outcome is in this line); the command is not run again for it");
        return;
      }
      if (!warned) ctx.log.warn({ err }, "could not log the remote command's run: the database is unavailable; trying again until it answers");
      warned = true;
      await sleep(waitMs, undefined, { signal: ctx.signal }).catch(() => undefined);
    }
  }
}
