import type { HistoryState, OperationRecorder, OperationRef } from "@fleet/core/operationRecorder";
import { historyText, summarizeForHistory } from "@fleet/core/operationRecorder";
import type { ListCursor, OperationDetail, OperationHistoryReader, OperationSummary, SiteFilter } from "@fleet/core/operations";
import type { DbPool, Queryable } from "../pool";
import { prismaOf } from "../prismaClient";

/**
 * The operation history: `operations` (one row per BullMQ job id) and `operation_status`
 * (what happened to it, in order). Every event is ONE statement: an upsert of the operation
 * plus its status row, chained by a CTE, so the runner pays one round trip per job event.
 *
 * Concurrency: the upsert is `INSERT … ON CONFLICT (id) DO UPDATE`, atomic per row, so the
 * submitter and a runner that picked the job up at once cannot both insert. Job ids can be
 * recycled (`range-12` enqueued again after the first job was pruned): an event whose job is
 * newer than the row (`created_at`, BullMQ's job timestamp) resets the row and drops the old
 * job's status rows; an event of an older job than the row is ignored.
 *
 * A deferred request's row (`queued_after` set, written by `deferred`) stands in for a job
 * BullMQ has not created yet: the first event of the job under that id takes it over whatever
 * its timestamp — its values replace the row's, as for a recycled id, but who submitted it and
 * the status rows stay (the id is derived from one run of another job, so no other job can
 * ever carry it).
 */
type Column = "name" | "queue" | "data" | "state" | "attempts" | "max_attempts" | "submitted_by" | "submitted_site" | "progress" | "result" | "error" | "created_at" | "started_at" | "finished_at";

const COLUMNS: readonly Column[] = ["name", "queue", "data", "state", "attempts", "max_attempts", "submitted_by", "submitted_site", "progress", "result", "error", "created_at", "started_at", "finished_at"];

/**
 * Who submitted a job, and for which site, once recorded, stay (a later submission of the same
 * job, a runner's event, a deferred request's job taking its row over keep them): the site goes
 * with the submitter it was recorded with, never with another one's.
 */
const KEPT_SUBMITTER = {
  submitted_by: "COALESCE(o.submitted_by, EXCLUDED.submitted_by)",
  submitted_site: "CASE WHEN o.submitted_by IS NULL THEN EXCLUDED.submitted_site ELSE o.submitted_site END",
} as const;

interface StatusRow {
  kind: "STATE" | "PROGRESS" | "LOG";
  state?: HistoryState;
  attempt?: number;
  progress?: unknown;
  message?: string;
}

interface Event {
  /** Values of the columns this event sets (others: NULL, or 0 / WAITING). */
  values: Partial<Record<Column, unknown>>;
  /** For the same job: SQL per column (`o.` is the row, `EXCLUDED.` the event); others are kept. */
  update: Partial<Record<Column, string>>;
  /** Extra condition for the same job (e.g. a delay already recorded is not recorded again). */
  onlyIf?: string;
  status: StatusRow;
}

const CAST: Record<Column, string> = {
  name: "text", queue: "text", data: "jsonb", state: "operation_state", attempts: "int", max_attempts: "int", submitted_by: "text", submitted_site: "text",
  progress: "jsonb", result: "jsonb", error: "text", created_at: "timestamptz", started_at: "timestamptz", finished_at: "timestamptz",
};

/** The database's clock, for the timestamps this process does not know better. */
const NOW = Symbol("now()");

const json = (value: unknown): string | null => (value === undefined || value === null ? null : JSON.stringify(summarizeForHistory(value)));

async function record(db: Queryable, op: OperationRef, event: Event): Promise<void> {
  const values: Record<Column, unknown> = {
    name: op.name,
    queue: op.queue,
    data: json(op.data),
    state: "WAITING",
    attempts: 0,
    max_attempts: op.maxAttempts,
    submitted_by: null,
    submitted_site: null,
    progress: null,
    result: null,
    error: null,
    created_at: new Date(op.createdAt),
    started_at: null,
    finished_at: null,
    ...event.values,
  };
  const params: unknown[] = [op.id];
  const placeholder = (column: Column) => {
    const v = values[column];
    if (v === NOW) return "now()";
    params.push(v);
    return `$${params.length}::${CAST[column]}`;
  };
  const inserted = COLUMNS.map(placeholder);
  const recycled = "(o.created_at < EXCLUDED.created_at OR o.queued_after IS NOT NULL)";
  const sets = COLUMNS.map((c) =>
    c === "submitted_by" || c === "submitted_site"
      ? `${c} = CASE WHEN o.queued_after IS NOT NULL THEN ${KEPT_SUBMITTER[c]} WHEN ${recycled} THEN EXCLUDED.${c} ELSE ${event.update[c] ?? `o.${c}`} END`
      : `${c} = CASE WHEN ${recycled} THEN EXCLUDED.${c} ELSE ${event.update[c] ?? `o.${c}`} END`,
  );
  const status = event.status;
  params.push(status.kind, status.state ?? null, status.attempt ?? null, json(status.progress), status.message ?? null);
  const s = params.length - 4;
  await db.query(
    `WITH stale AS (
       DELETE FROM operation_status WHERE operation_id = $1
          AND EXISTS (SELECT 1 FROM operations WHERE id = $1 AND created_at < ${inserted[COLUMNS.indexOf("created_at")]} AND queued_after IS NULL)
     ), op AS (
       INSERT INTO operations AS o (id, ${COLUMNS.join(", ")}, updated_at)
       VALUES ($1, ${inserted.join(", ")}, now())
       ON CONFLICT (id) DO UPDATE SET ${sets.join(", ")}, queued_after = NULL, updated_at = now()
       WHERE (o.created_at <= EXCLUDED.created_at OR o.queued_after IS NOT NULL)${event.onlyIf ? ` AND (${recycled} OR ${event.onlyIf})` : ""}
       RETURNING id
     )
     INSERT INTO operation_status (operation_id, kind, state, attempt, progress, message)
     SELECT id, $${s}::operation_status_kind, $${s + 1}::operation_state, $${s + 2}::int, $${s + 3}::jsonb, $${s + 4}::text FROM op`,
    params,
  );
}

/** Writes the history as the runner and the submitters see jobs change (see OperationRecorder). */
export class OperationHistory implements OperationRecorder {
  constructor(private readonly db: Queryable) {}

  submitted(op: OperationRef, state: "WAITING" | "DELAYED", by: string | null, site?: string | null): Promise<void> {
    const submittedBy = by === null ? null : historyText(by);
    return record(this.db, op, {
      // A site without a submitter would be a site's operation nobody can say who submitted.
      values: { state, submitted_by: submittedBy, submitted_site: submittedBy === null ? null : (site ?? null) },
      // A runner may have recorded the job already: keep its state, add who submitted it (and for which site).
      update: KEPT_SUBMITTER,
      status: { kind: "STATE", state, message: submittedBy ? `submitted by ${submittedBy}` : "submitted" },
    });
  }

  /**
   * Several requests of one run share the row: the first submitter is kept (the one the row
   * was written for; the others are in its status rows), the data is the last one's (what
   * BullMQ runs). A row of the job itself (created meanwhile) only gains a submitter if it has none.
   */
  async deferred(op: OperationRef, queuedAfter: string, by: string | null, site?: string | null): Promise<void> {
    const submittedBy = by === null ? null : historyText(by);
    const message = `${submittedBy ? `submitted by ${submittedBy}` : "submitted"}; runs once operation ${historyText(queuedAfter)} has ended`;
    await this.db.query(
      `WITH op AS (
         INSERT INTO operations AS o (id, name, queue, data, state, attempts, max_attempts, submitted_by, submitted_site, created_at, queued_after, updated_at)
         VALUES ($1, $2, $3, $4::jsonb, 'WAITING', 0, $5, $6, $10, $7, $8, now())
         ON CONFLICT (id) DO UPDATE SET
           data = CASE WHEN o.queued_after IS NOT NULL THEN EXCLUDED.data ELSE o.data END,
           submitted_by = ${KEPT_SUBMITTER.submitted_by},
           submitted_site = ${KEPT_SUBMITTER.submitted_site},
           updated_at = now()
         RETURNING id
       )
       INSERT INTO operation_status (operation_id, kind, state, message) SELECT id, 'STATE', 'WAITING', $9 FROM op`,
      [op.id, op.name, op.queue, json(op.data), op.maxAttempts, submittedBy, new Date(op.createdAt), historyText(queuedAfter), message, submittedBy === null ? null : (site ?? null)],
    );
  }

  started(op: OperationRef, attempt: number): Promise<void> {
    return record(this.db, op, {
      values: { state: "ACTIVE", attempts: attempt, started_at: NOW },
      update: { state: "EXCLUDED.state", attempts: "EXCLUDED.attempts", started_at: "COALESCE(o.started_at, EXCLUDED.started_at)", finished_at: "NULL" },
      status: { kind: "STATE", state: "ACTIVE", attempt, message: `attempt ${attempt} of ${op.maxAttempts} started` },
    });
  }

  delayed(op: OperationRef, why: string): Promise<void> {
    const reason = historyText(why);
    return record(this.db, op, {
      values: { state: "DELAYED" },
      update: { state: "EXCLUDED.state" },
      // A job kept waiting (exclusive gate, closed window) comes back again and again: one row per stretch.
      onlyIf: "o.state <> 'DELAYED'",
      status: { kind: "STATE", state: "DELAYED", message: reason },
    });
  }

  progress(op: OperationRef, value: unknown): Promise<void> {
    return record(this.db, op, {
      values: { state: "ACTIVE", progress: json(value) },
      update: { progress: "EXCLUDED.progress" },
      status: { kind: "PROGRESS", progress: value },
    });
  }

  finished(op: OperationRef, ended: { state: "COMPLETED" | "FAILED" | "DELAYED"; attempts: number; result?: unknown; error?: string; progress?: unknown }): Promise<void> {
    const outcome = ended.error === undefined ? ended : { ...ended, error: historyText(ended.error) };
    const done = outcome.state !== "DELAYED";
    const message =
      outcome.state === "COMPLETED" ? `attempt ${outcome.attempts} completed`
      : outcome.state === "FAILED" ? `attempt ${outcome.attempts} failed for good: ${outcome.error ?? "unknown"}`
      : `attempt ${outcome.attempts} failed, retried after a backoff: ${outcome.error ?? "unknown"}`;
    return record(this.db, op, {
      values: {
        state: outcome.state,
        attempts: outcome.attempts,
        result: json(outcome.result),
        error: outcome.error ?? null,
        progress: json(outcome.progress),
        finished_at: done ? NOW : null,
      },
      update: {
        state: "EXCLUDED.state",
        attempts: "EXCLUDED.attempts",
        result: "EXCLUDED.result",
        error: outcome.state === "COMPLETED" ? "NULL" : "EXCLUDED.error",
        progress: "COALESCE(EXCLUDED.progress, o.progress)",
        finished_at: "EXCLUDED.finished_at",
      },
      status: { kind: "STATE", state: outcome.state, attempt: outcome.attempts, message },
    });
  }

  removed(op: OperationRef, who: string | null): Promise<void> {
    const by = who === null ? null : historyText(who);
    return record(this.db, op, {
      values: { state: "REMOVED", finished_at: NOW },
      update: { state: "EXCLUDED.state", finished_at: "EXCLUDED.finished_at" },
      status: { kind: "STATE", state: "REMOVED", message: by ? `cancelled by ${by} before it started` : "cancelled before it started" },
    });
  }

  /**
   * A LOG row (an operator's action on the job, e.g. a retry from the board) in the history of
   * this job, if the history has it: same id and same BullMQ timestamp, so an older job of a
   * recycled id never gets it. Creates no operation: false when there is none, and the caller
   * records the action elsewhere.
   */
  async note(op: Pick<OperationRef, "id" | "createdAt">, message: string): Promise<boolean> {
    const { rowCount } = await this.db.query(
      `INSERT INTO operation_status (operation_id, kind, message)
       SELECT id, 'LOG', $3 FROM operations WHERE id = $1 AND created_at = $2`,
      [op.id, new Date(op.createdAt), historyText(message)],
    );
    return (rowCount ?? 0) > 0;
  }
}

/** An operation as the API shows it when only the history still knows it. */
export interface HistoricOperation extends OperationDetail {
  source: "history";
  submittedBy: string | null;
  /** A deferred request whose job does not exist yet: the running job it waits for. */
  queuedAfter?: string;
}

// Reads through Prisma (typed rows); the writes above are one SQL statement per event (hot path).
const SUMMARY_FIELDS = { id: true, name: true, queue: true, state: true, attempts: true, maxAttempts: true, submittedBy: true, progress: true, error: true, createdAt: true, startedAt: true, finishedAt: true, queuedAfter: true } as const;

interface OperationRow {
  id: string;
  name: string;
  queue: string;
  state: HistoryState;
  attempts: number;
  maxAttempts: number;
  submittedBy: string | null;
  progress: unknown;
  error: string | null;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  queuedAfter: string | null;
}

const iso = (d: Date | null) => (d ? d.toISOString() : null);

function toSummary(row: OperationRow): OperationSummary & { source: "history"; submittedBy: string | null; queuedAfter?: string } {
  return {
    id: row.id,
    name: row.name,
    queue: row.queue,
    state: row.state.toLowerCase(),
    progress: row.progress ?? 0,
    attempts: row.attempts,
    maxAttempts: row.maxAttempts,
    createdAt: row.createdAt.toISOString(),
    startedAt: iso(row.startedAt),
    finishedAt: iso(row.finishedAt),
    error: row.error,
    source: "history",
    submittedBy: row.submittedBy,
    ...(row.queuedAfter !== null ? { queuedAfter: row.queuedAfter } : {}),
  };
}

const LOG_LINES = 200;

/** The history of one operation with its last 200 status rows as log lines; undefined if unknown. */
export async function findOperationHistory(db: DbPool, id: string): Promise<HistoricOperation | undefined> {
  const prisma = prismaOf(db);
  const row = await prisma.operation.findUnique({ where: { id }, select: { ...SUMMARY_FIELDS, data: true, result: true } });
  if (!row) return undefined;
  const [status, logCount] = await Promise.all([
    prisma.operationStatus.findMany({
      where: { operationId: id },
      select: { at: true, kind: true, state: true, progress: true, message: true },
      orderBy: { id: "desc" },
      take: LOG_LINES,
    }),
    prisma.operationStatus.count({ where: { operationId: id } }),
  ]);
  const log = status.reverse().map((s) => `${s.at.toISOString()} ${s.kind === "PROGRESS" ? `progress ${JSON.stringify(s.progress)}` : `${s.state ? s.state.toLowerCase() : s.kind.toLowerCase()}: ${s.message ?? ""}`}`);
  return { ...toSummary(row), data: row.data, result: row.result, log, logCount: status.length === 0 ? 0 : logCount };
}

const STATES: readonly HistoryState[] = ["WAITING", "DELAYED", "ACTIVE", "COMPLETED", "FAILED", "REMOVED"];

/** Newest first; `state` is the API's (lower-case BullMQ) name. */
export async function listOperationHistory(db: DbPool, state: string | undefined, limit: number): Promise<Array<OperationSummary & { source: "history" }>> {
  const dbState = STATES.find((s) => s === state?.toUpperCase());
  if (state !== undefined && dbState === undefined) return [];
  const rows = await prismaOf(db).operation.findMany({
    where: dbState ? { state: dbState } : {},
    select: SUMMARY_FIELDS,
    orderBy: [{ createdAt: "desc" }, { id: "asc" }],
    take: limit,
  });
  return rows.map(toSummary);
}

/**
 * A site's operations (submitted_site), newest first (created_at, then id), in the given history
 * states (all: undefined), of one job (`name`; all: undefined), strictly after `after` in that
 * order: one backward walk of
 * operations_submitted_site_idx per state, from the cursor, each reading at most `limit` rows,
 * merged by PostgreSQL (a top-N sort of at most 6 × limit rows). PostgreSQL orders and compares
 * the ids, cursor included, so the pages a caller reads one after another meet exactly (a merge
 * in JavaScript would order ids by code unit, the cursor's comparison by the collation).
 * A row with a site and no submitter is left out: no writer of this version leaves one (a site
 * goes with its submitter), but writers from before sites were recorded, still running in a
 * rolling upgrade, give a recycled id's new job the row with the submitter cleared and the
 * older job's site kept (a column they do not know), and that site must not see the new job.
 * Not `state = ANY (…) ORDER BY created_at` in one walk: over several states the index cannot
 * give created_at order, and the planner would read every matching row of the site and sort.
 */
async function listSiteOperations(db: Queryable, site: string, filter: SiteFilter, limit: number, after?: ListCursor): Promise<Array<OperationSummary & { source: "history" }>> {
  const params: unknown[] = [site, limit];
  const from = after ? `AND (created_at, id) < ($${params.push(new Date(after.createdAt))}::timestamptz, $${params.push(after.id)}::text)` : "";
  // A job's name is not in the index: its rows are filtered in the walk (exact; a rare job reads further).
  const named = filter.name !== undefined ? `AND name = $${params.push(filter.name)}` : "";
  const walks = (filter.states ?? STATES).map(
    (state) =>
      `(SELECT id, name, queue, state, attempts, max_attempts AS "maxAttempts", submitted_by AS "submittedBy", progress, error,
               created_at AS "createdAt", started_at AS "startedAt", finished_at AS "finishedAt", queued_after AS "queuedAfter"
          FROM operations
         WHERE submitted_site = $1 AND submitted_by IS NOT NULL AND state = $${params.push(state)}::operation_state ${from} ${named}
         ORDER BY created_at DESC, id DESC LIMIT $2)`,
  );
  const { rows } = await db.query<OperationRow>(`${walks.join("\n UNION ALL\n")}\n ORDER BY "createdAt" DESC, id DESC LIMIT $2`, params);
  return rows.map(toSummary);
}

export interface PruneOperationsResult {
  operations: number;
  statusRows: number;
}

/**
 * Deletes finished operations past their retention, with their status rows, in batches (one
 * statement each: no long lock, and no status row outlives its operation).
 */
export async function pruneOperations(db: Queryable, keepSucceededMs: number, keepFailedMs: number, batch = 5_000): Promise<PruneOperationsResult> {
  const total: PruneOperationsResult = { operations: 0, statusRows: 0 };
  for (;;) {
    const { rows } = await db.query<{ operations: number; status_rows: number }>(
      `WITH gone AS (
         DELETE FROM operations WHERE id IN (
           SELECT id FROM operations
            WHERE (state = 'COMPLETED' AND finished_at < now() - make_interval(secs => $1::float8 / 1000))
               OR (state IN ('FAILED', 'REMOVED') AND finished_at < now() - make_interval(secs => $2::float8 / 1000))
            ORDER BY finished_at LIMIT $3)
         RETURNING id
       ), statuses AS (
         DELETE FROM operation_status WHERE operation_id IN (SELECT id FROM gone) RETURNING 1
       )
       SELECT (SELECT count(*) FROM gone)::int AS operations, (SELECT count(*) FROM statuses)::int AS status_rows`,
      [keepSucceededMs, keepFailedMs, batch],
    );
    const r = rows[0]!;
    total.operations += r.operations;
    total.statusRows += r.status_rows;
    if (r.operations < batch) return total;
  }
}

/** The history as core's operations functions read it (API and CLI fall back to it). */
export function operationHistoryReader(db: DbPool): OperationHistoryReader {
  return {
    find: (id) => findOperationHistory(db, id),
    list: (state, limit) => listOperationHistory(db, state, limit),
    listSite: (site, filter, limit, after) => listSiteOperations(db, site, filter, limit, after),
    submitter: async (id) => {
      const row = await prismaOf(db).operation.findUnique({ where: { id }, select: { submittedBy: true, submittedSite: true, createdAt: true } });
      return row ? { submittedBy: row.submittedBy, site: row.submittedSite, createdAt: row.createdAt.getTime() } : undefined;
    },
  };
}
