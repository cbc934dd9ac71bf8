import { parseRunAt } from "@fleet/core/runAt";
import { userInfo } from "node:os";
import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import { ApiLock } from "@fleet/core/apiLock";
import { parseDuration } from "@fleet/core/backoff";
import type { JobClient } from "@fleet/core/jobClient";
import { OPERATION_STATES, cancelOperation, findOperation, listOperations, operationRef, showOperation } from "@fleet/core/operations";
import { readLog, writeLog } from "@fleet/db/sql/log";
import { OperationHistory, operationHistoryReader } from "@fleet/db/sql/operations";
import type { OperationState, OperationSummary } from "@fleet/core/operations";
import { QUEUES } from "@fleet/jobs/contracts";
import type { FleetJobs } from "@fleet/jobs/contracts";
import type { CliContext } from "../context";
import { integerOption } from "../cliRun";
import { jsonText, oneLine, terminalSafe } from "../terminalText";

/**
 * The operator commands of issue 4: queues (counts, pause, resume), the API lock, and
 * operations (submit, show, list, cancel), each with readable output and `--json`. They act on
 * Redis directly, as the dashboard does, so they work with or without a dashboard running.
 */
type Run = (fn: (ctx: CliContext) => Promise<number | void>) => Promise<void>;

const COUNTED = ["waiting", "active", "delayed", "prioritized", "failed", "completed"] as const;

const print = (json: boolean | undefined, value: unknown, text: string) => process.stdout.write(json ? `${jsonText(value)}\n` : `${terminalSafe(text)}\n`);

function queueName(value: string): string {
  const known: readonly string[] = Object.values(QUEUES);
  if (!known.includes(value)) throw new Error(`unknown queue "${value}"; known: ${known.join(", ")}`);
  return value;
}

function stateName(value: string): OperationState {
  if (!(OPERATION_STATES as readonly string[]).includes(value)) throw new InvalidArgumentError(`expected one of ${OPERATION_STATES.join(", ")}`);
  return value as OperationState;
}

function jsonData(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    throw new InvalidArgumentError("expected JSON, e.g. '{\"rangeId\": 12}'");
  }
}

export function registerOperatorCommands(program: Command, run: Run): void {
  program
    .command("queues")
    .description("every queue of the fleet with its jobs by state and whether it is paused")
    .option("--json", "machine-readable output")
    .action((opts: { json?: boolean }) =>
      run(async (ctx) => {
        // Read-only: a prefix no fleet uses is an error, not an empty fleet (and creates no key).
        await ctx.requireFleet();
        const runtime = await ctx.runtime({ withRedis: true });
        const rows = await Promise.all(
          Object.values(QUEUES).map(async (name) => {
            const queue = runtime.deps.jobs.queue(name);
            return { queue: name, paused: await queue.isPaused(), counts: await queue.getJobCounts(...COUNTED) };
          }),
        );
        const header = ["queue".padEnd(14), ...COUNTED.map((s) => s.padStart(12)), "  paused"].join("");
        const lines = rows.map((r) => [r.queue.padEnd(14), ...COUNTED.map((s) => String(r.counts[s] ?? 0).padStart(12)), r.paused ? "  yes" : "  no"].join(""));
        print(opts.json, rows, [header, ...lines].join("\n"));
      }),
    );

  for (const [verb, pause] of [["pause", true], ["resume", false]] as const) {
    program
      .command(`${verb} <queue>`)
      .description(pause ? "stop workers taking new jobs from a queue (running jobs finish)" : "let workers take jobs from a paused queue again")
      .option("--json", "machine-readable output")
      .action((queue: string, opts: { json?: boolean }) =>
        run(async (ctx) => {
          const name = queueName(queue);
          const runtime = await ctx.runtime({ withRedis: true });
          await (pause ? runtime.deps.jobs.queue(name).pause() : runtime.deps.jobs.queue(name).resume());
          // Recorded with who did it, as the board's pauses are (migration_log, `fleet log
          // --subject queue:NAME`); the queue is paused either way.
          const by = `cli:${userInfo().username}`;
          await writeLog(runtime.db, [{ level: "info", job: "cli", subject: `queue:${name}`, message: `queue ${name} ${pause ? "paused" : "resumed"} by ${by}`, details: { by } }]).catch((err: unknown) =>
            process.stderr.write(terminalSafe(`fleet: warning: the ${verb} is done but not recorded in migration_log (${(err as Error).message})\n`)),
          );
          print(opts.json, { queue: name, paused: pause }, `${name}: ${pause ? "paused" : "resumed"}`);
        }),
      );
  }

  program
    .command("log")
    .description("migration_log, newest last: what jobs did to which subject, and operators' actions (the board's: --job board)")
    .option("--job <job>", "only this job's entries (board, kill, unpack, …)")
    .option("--subject <subject>", "only entries about this subject (queue:migration, queues, operation:range-12, file:345, …)")
    .option("--limit <n>", "at most this many, the newest (1 to 1000)", integerOption(1, 1000), 50)
    .option("--json", "machine-readable output")
    .action((opts: { job?: string; subject?: string; limit: number; json?: boolean }) =>
      run(async (ctx) => {
        const entries = await readLog(await ctx.database(), opts);
        // One entry, one line: its text, from jobs and operators, cannot print a line of its own.
        const lines = entries.map((e) => [`${e.at.toISOString().slice(0, 19)}Z`, e.level.padEnd(5), e.job ?? "-", e.subject ?? "-", e.message].map(oneLine).join("  "));
        print(opts.json, entries, lines.length === 0 ? "no entries" : lines.join("\n"));
      }),
    );

  program
    .command("lock")
    .description("lock the operations API (maintenance mode): submissions are refused with the reason until `fleet unlock`")
    .requiredOption("--reason <text>", "why, shown to everyone who is refused")
    .option("--json", "machine-readable output")
    .action((opts: { reason: string; json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: true });
        const state = await new ApiLock(runtime.redis, runtime.prefix).lock(opts.reason, `cli:${userInfo().username}`);
        print(opts.json, { locked: state }, `API locked: ${state.reason}`);
      }),
    );
  program
    .command("unlock")
    .description("unlock the operations API")
    .option("--json", "machine-readable output")
    .action((opts: { json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: true });
        const removed = await new ApiLock(runtime.redis, runtime.prefix).unlock();
        print(opts.json, { locked: false, removed }, removed ? "API unlocked" : "the API was not locked");
      }),
    );

  const ops = program.command("ops").description("operations: jobs of the catalogue, submitted and followed");
  ops
    .command("submit <name>")
    .description("submit a catalogue job (refused while the API is locked)")
    .option("--data <json>", "the job's payload", jsonData, {})
    .option("--delay <duration>", "run no earlier than this from now, e.g. 10m")
    .option("--at <time>", "run no earlier than this instant: ISO 8601 with an offset, or a local time and an IANA zone (\"2026-12-05T09:00 Europe/Paris\")")
    .option("--json", "machine-readable output")
    .action((name: string, opts: { data: unknown; delay?: string; at?: string; json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: true });
        const lock = await new ApiLock(runtime.redis, runtime.prefix).get();
        if (lock) {
          process.stderr.write(terminalSafe(`fleet: the API is locked (${lock.reason}, by ${lock.by}); \`fleet unlock\` first\n`));
          return 1;
        }
        if (opts.delay !== undefined && opts.at !== undefined) {
          process.stderr.write("fleet: give --delay or --at, not both\n");
          return 1;
        }
        let delayMs = opts.delay === undefined ? undefined : parseDuration(opts.delay);
        if (opts.at !== undefined) {
          const at = parseRunAt(opts.at, new Date());
          if (!at.ok) {
            process.stderr.write(`fleet: ${at.error}\n`);
            return 1;
          }
          delayMs = at.delayMs;
        }
        // The client checks the name against the catalogue and validates the payload.
        const by = `cli:${userInfo().username}`;
        // Who submitted it goes with a durable kind's kept request too (a replay records it).
        const { id, job, deduplicated, queuedAfter, data } = await runtime.deps.jobs.submit(name as keyof FleetJobs & string, opts.data as never, { ...(delayMs ? { delayMs } : {}), submittedBy: by });
        // The job is in Redis either way: a history that cannot be written now is filled in by
        // the runner. A duplicate leaves the record of the submission that queued the job as it
        // is. A request waiting for a running job has no job yet: its row is what `ops show`
        // answers until the job exists (the first submitter of that run is kept).
        if (queuedAfter) {
          await new OperationHistory(runtime.db)
            .deferred({ ...operationRef(job), id, createdAt: Date.now(), data }, queuedAfter, by)
            .catch((err: unknown) => process.stderr.write(`fleet: operation history not written (${(err as Error).message})\n`));
        } else if (!deduplicated) {
          await new OperationHistory(runtime.db)
            .submitted(operationRef(job), delayMs ? "DELAYED" : "WAITING", by)
            .catch((err: unknown) => process.stderr.write(`fleet: operation history not written (${(err as Error).message})\n`));
        }
        const queue = job.queueName;
        const text = deduplicated
          ? `${name} is already queued as operation ${id} (queue ${queue}): this submission was a duplicate, nothing new was queued`
          : queuedAfter
            ? `submitted ${name} as operation ${id} (queue ${queue}); it runs once operation ${queuedAfter}, running now, has ended`
            : `submitted ${name} as operation ${id} (queue ${queue})`;
        print(opts.json, { id, name, queue, ...(deduplicated ? { deduplicated } : {}), ...(queuedAfter ? { queuedAfter } : {}) }, text);
      }),
    );
  ops
    .command("show <id>")
    .description("state, progress, attempts, result or error, and the job's log (from the history once BullMQ has pruned it)")
    .option("--json", "machine-readable output")
    .action((id: string, opts: { json?: boolean }) =>
      run(async (ctx) => {
        await ctx.requireFleet();
        const runtime = await ctx.runtime({ withRedis: true });
        const op = await showOperation(queues(runtime.deps.jobs), operationHistoryReader(runtime.db), id);
        if (!op) {
          process.stderr.write(`fleet: no operation ${id}\n`);
          return 1;
        }
        const text = [
          ...summaryLines([op]),
          `data      ${JSON.stringify(op.data)}`,
          ...(op.result !== null ? [`result    ${JSON.stringify(op.result)}`] : []),
          ...(op.error ? [`error     ${op.error}`] : []),
          ...op.log.map((l) => `log       ${l}`),
        ].join("\n");
        print(opts.json, op, text);
      }),
    );
  ops
    .command("list")
    .description("operations, newest first")
    .option("--state <state>", `only this state (${OPERATION_STATES.join(", ")})`, stateName)
    .option("--limit <n>", "at most this many (1 to 500)", integerOption(1, 500), 50)
    .option("--json", "machine-readable output")
    .action((opts: { state?: OperationState; limit: number; json?: boolean }) =>
      run(async (ctx) => {
        await ctx.requireFleet();
        const runtime = await ctx.runtime({ withRedis: true });
        const list = await listOperations(queues(runtime.deps.jobs), opts.state, opts.limit, operationHistoryReader(runtime.db));
        print(opts.json, list, list.length === 0 ? "no operations" : summaryLines(list).join("\n"));
      }),
    );
  ops
    .command("cancel <id>")
    .description("remove an operation that has not started, or abort a running one (it fails as cancelled, without retry)")
    .option("--json", "machine-readable output")
    .action((id: string, opts: { json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: true });
        const found = await findOperation(queues(runtime.deps.jobs), id);
        if (!found) {
          process.stderr.write(`fleet: no operation ${id}\n`);
          return 1;
        }
        const outcome = await cancelOperation(runtime.redis, runtime.prefix, found, runtime.deps.jobs.contractOf(found.job.name), runtime.deps.jobs);
        if (outcome.kind === "removed") {
          await new OperationHistory(runtime.db)
            .removed(operationRef(found.job), `cli:${userInfo().username}`)
            .catch((err: unknown) => process.stderr.write(`fleet: operation history not written (${(err as Error).message})\n`));
        }
        const text =
          outcome.kind === "removed" ? `removed operation ${id} (it was ${outcome.was})`
          : outcome.kind === "requested" ? `asked the workers to abort operation ${id}`
          : outcome.kind === "no-listener" ? `operation ${id} is running but no worker listens for cancel requests`
          : outcome.kind === "refused" ? `operation ${id} is not cancelled: ${outcome.reason}`
          : `operation ${id} has already ${outcome.state === "completed" ? "completed" : "failed"}`;
        print(opts.json, { id, ...outcome }, text);
        return outcome.kind === "removed" || outcome.kind === "requested" ? 0 : 1;
      }),
    );
}

function queues(jobs: Pick<JobClient<FleetJobs>, "queue">) {
  return Object.values(QUEUES).map((name) => jobs.queue(name));
}

/**
 * One line per operation, in columns as wide as their longest value (at least the usual
 * widths): an id past 24 characters (a script's own job id) pushed the rest of its line out of
 * the columns (found by a walk).
 */
function summaryLines(ops: readonly OperationSummary[]): string[] {
  const cells = ops.map((op) => [String(op.id), op.name, op.queue, op.state, `attempt ${op.attempts}/${op.maxAttempts}`, op.createdAt]);
  const widths = [24, 16, 12, 10, 0].map((min, i) => Math.max(min, ...cells.map((row) => row[i]!.length)));
  return cells.map(([id, name, queue, state, attempt, createdAt]) =>
    `${id!.padEnd(widths[0]!)} ${name!.padEnd(widths[1]!)} ${queue!.padEnd(widths[2]!)} ${state!.padEnd(widths[3]!)} ${attempt!.padEnd(widths[4]!)}  ${createdAt}`,
  );
}
