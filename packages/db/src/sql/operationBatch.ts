import type { HistoryState, OperationRecorder, OperationRef } from "@fleet/core/operationRecorder";
import { historyText, summarizeForHistory } from "@fleet/core/operationRecorder";
import type { Queryable } from "../pool";
import { OperationHistory } from "./operations";

/**
 * The runner's operation history, written in batches: `started`, `delayed`, `progress` and
 * `finished` only buffer the event (the job never waits on PostgreSQL) and a flush writes
 * everything buffered in ONE statement — within `intervalMs` (100 ms) of the first buffered
 * event, at once when `maxEvents` are waiting, and on `flush()` (the runner's stop).
 * `submitted` and `removed` (API and CLI, not the hot path) are written at once, as before.
 *
 * Hand-written SQL, not Prisma: it is the runner's bulk hot path (one multi-row statement
 * per flush instead of one statement per job event).
 *
 * The statement has the same effect as OperationHistory's per-event statements applied in
 * order (operationHistory.test.ts compares them): events are folded per job in JS into the
 * row to insert (no row yet, or an older job of a recycled id) and the change to apply to an
 * existing row (keep / set / keep-if-set per column); a delay is recorded once per stretch
 * (its status row only when the row was not DELAYED already). A job whose row a submitter
 * inserted between our snapshot and our insert is written again in the next flush.
 *
 * Failures: a flush PostgreSQL refuses (down, failing over) keeps its events, in order, and the
 * next attempt backs off (an interval, doubling to 5 s; `flush()` on stop tries at once). A
 * batch refused for its data (SQLSTATE class 22, or a value JSON cannot carry) is cut in halves
 * until the one event PostgreSQL cannot take is alone; only that event is dropped and reported.
 * Strings are made storable first on both paths (historyText: NUL and lone surrogates become
 * U+FFFD), so in practice that takes a job id with a NUL or a date out of range. A row already
 * REMOVED (the API cancelled the job before it started) is final: a runner event of the same
 * job still in the buffer is older than the removal and is not applied.
 *
 * What a SIGKILL loses: the events buffered since the last flush (at most `intervalMs` of
 * them plus one flush in flight). BullMQ's own record of the job is unaffected, and the API
 * reads BullMQ first (core/operations.ts); the history only answers once BullMQ has removed
 * the job (KEEP_COMPLETED, 24 h by default), and by then `reconcileOperationHistory`, run by
 * every worker at start, has written what BullMQ recorded (COMPLETED, FAILED).
 */

/** Columns a runner event may change on an existing row, in the order of `modes`. */
const MUTABLE = ["state", "attempts", "progress", "result", "error", "started_at", "finished_at"] as const;
type Mutable = (typeof MUTABLE)[number];
// Their indexes: the fold works on arrays (it runs for every job, 2 events each, thousands a second).
const STATE = 0, ATTEMPTS = 1, PROGRESS = 2, RESULT = 3, ERROR = 4, STARTED_AT = 5, FINISHED_AT = 6;
/** A row's values of MUTABLE before any event (a row inserted by the flush). */
const DEFAULTS: readonly unknown[] = ["WAITING", 0, null, null, null, null, null];

/**
 * What an event does to one column of an existing row: keep it, set it, or set it if it is
 * null (coalesce: a retry keeps the first start time).
 */
type Mode = "k" | "s" | "c";

/** A status row, as the statement reads it (JSON; undefined is left out and reads as NULL). */
interface StatusRow {
  id: string;
  kind: "STATE" | "PROGRESS";
  state: HistoryState | undefined;
  attempt: number | undefined;
  progress: unknown;
  message: string | undefined;
  /** ISO time. */
  at: string;
  /** Recorded only if the row was not DELAYED before this flush (a delay's first status of a stretch). */
  if_not_delayed: true | undefined;
}

type Event =
  | { type: "started"; attempt: number; at: Date }
  | { type: "delayed"; reason: string; at: Date }
  | { type: "progress"; value: unknown; at: Date }
  | { type: "finished"; state: "COMPLETED" | "FAILED" | "DELAYED"; attempts: number; result?: unknown; error?: string; progress?: unknown; at: Date };

export interface Buffered {
  op: OperationRef;
  event: Event;
}

/** A value as the history stores it (jsonb): summarized, secrets redacted; null for none. */
const json = (value: unknown): unknown => (value === undefined || value === null ? null : summarizeForHistory(value));

/** What one event does, per column of MUTABLE. */
interface Effect {
  /** The values of a first insert (undefined: the default). */
  insert: unknown[];
  /** The change to an existing row, and the values it sets. */
  modes: readonly Mode[];
  values: unknown[];
  status: { kind: StatusRow["kind"]; state: HistoryState | null; attempt: number | null; progress: unknown; message: string | null };
}

const U = undefined;
const STARTED_MODES: readonly Mode[] = ["s", "s", "k", "k", "k", "c", "s"];
const DELAYED_MODES: readonly Mode[] = ["s", "k", "k", "k", "k", "k", "k"];
const PROGRESS_MODES: readonly Mode[] = ["k", "k", "s", "k", "k", "k", "k"];
const FINISHED_MODES: readonly Mode[] = ["s", "s", "s", "s", "s", "k", "s"];
const FINISHED_KEEP_PROGRESS_MODES: readonly Mode[] = ["s", "s", "k", "s", "s", "k", "s"];

function effect(op: OperationRef, e: Event): Effect {
  switch (e.type) {
    case "started":
      return {
        insert: ["ACTIVE", e.attempt, U, U, U, e.at, U],
        modes: STARTED_MODES,
        values: ["ACTIVE", e.attempt, U, U, U, e.at, null],
        status: { kind: "STATE", state: "ACTIVE", attempt: e.attempt, progress: null, message: `attempt ${e.attempt} of ${op.maxAttempts} started` },
      };
    case "delayed":
      return { insert: ["DELAYED", U, U, U, U, U, U], modes: DELAYED_MODES, values: ["DELAYED", U, U, U, U, U, U], status: { kind: "STATE", state: "DELAYED", attempt: null, progress: null, message: e.reason } };
    case "progress": {
      // A row first made by a progress event is ACTIVE; an existing row keeps its state.
      const progress = json(e.value);
      return { insert: ["ACTIVE", U, progress, U, U, U, U], modes: PROGRESS_MODES, values: [U, U, progress, U, U, U, U], status: { kind: "PROGRESS", state: null, attempt: null, progress, message: null } };
    }
    case "finished": {
      const done = e.state !== "DELAYED";
      const progress = json(e.progress);
      const result = json(e.result);
      const finishedAt = done ? e.at : null;
      const message =
        e.state === "COMPLETED" ? `attempt ${e.attempts} completed`
        : e.state === "FAILED" ? `attempt ${e.attempts} failed for good: ${e.error ?? "unknown"}`
        : `attempt ${e.attempts} failed, retried after a backoff: ${e.error ?? "unknown"}`;
      return {
        insert: [e.state, e.attempts, progress, result, e.error ?? null, U, finishedAt],
        // No progress reported: the row keeps the last one.
        modes: progress === null ? FINISHED_KEEP_PROGRESS_MODES : FINISHED_MODES,
        values: [e.state, e.attempts, progress, result, e.state === "COMPLETED" ? null : (e.error ?? null), U, finishedAt],
        status: { kind: "STATE", state: e.state, attempt: e.attempts, progress: null, message },
      };
    }
  }
}

/** One job's events of a flush, folded. */
interface Folded {
  op: OperationRef;
  /** The row to insert if there is none (MUTABLE's values). */
  insert: unknown[];
  /** The change to an existing row: per column of MUTABLE, its mode and value (the events' changes composed in order). */
  modes: Mode[];
  values: unknown[];
  statuses: StatusRow[];
}

function fold(op: OperationRef, items: readonly Buffered[]): Folded {
  let insert: unknown[] | undefined;
  const modes: Mode[] = ["k", "k", "k", "k", "k", "k", "k"];
  const values: unknown[] = [null, null, null, null, null, null, null];
  const statuses: StatusRow[] = [];
  // The state after this flush's earlier events; undefined: whatever the row holds.
  let state: unknown;
  for (const { event: e } of items) {
    if (e.type === "delayed" && state === "DELAYED") continue; // once per stretch
    const fx = effect(op, e);
    if (!insert) {
      insert = DEFAULTS.slice();
      for (let i = 0; i < DEFAULTS.length; i++) if (fx.insert[i] !== undefined) insert[i] = fx.insert[i];
    } else {
      // The insert so far, changed as an existing row would be.
      for (let i = 0; i < DEFAULTS.length; i++) {
        const m = fx.modes[i];
        if (m === "s") insert[i] = fx.values[i];
        else if (m === "c") insert[i] ??= fx.values[i];
      }
    }
    // The change to an existing row: this event's after the earlier ones'.
    for (let i = 0; i < DEFAULTS.length; i++) {
      const m = fx.modes[i];
      if (m === "s") {
        modes[i] = "s";
        values[i] = fx.values[i];
      } else if (m === "c") {
        if (modes[i] === "k") {
          modes[i] = "c";
          values[i] = fx.values[i];
        } else values[i] ??= fx.values[i];
      }
    }
    const { kind, state: to, attempt, progress, message } = fx.status;
    // Nulls left out: a missing key reads as NULL.
    statuses.push({
      id: op.id,
      kind,
      state: to ?? undefined,
      attempt: attempt ?? undefined,
      progress: progress ?? undefined,
      message: message ?? undefined,
      at: e.at.toISOString(),
      if_not_delayed: (e.type === "delayed" && state === undefined) || undefined,
    });
    if (fx.modes[STATE] === "s") state = fx.values[STATE];
  }
  return { op, insert: insert ?? DEFAULTS.slice(), modes, values, statuses };
}

// Modes as sent: k keep; s / c set / coalesce with u_<column>; S / C the same with the insert's
// value i_<column> (the common case, sent once: a job's whole life in one flush).
// The row is an older job's (a recycled id) or a deferred request's, whose job this is (see
// OperationHistory): the batch's values replace it.
const TAKEN_OVER = "(o.created_at < b.created_at OR o.queued_after IS NOT NULL)";
const mutableSql = (c: Mutable, i: number) => {
  const mode = `substr(b.modes, ${i + 1}, 1)`;
  return (
    `${c} = CASE WHEN ${TAKEN_OVER} THEN b.i_${c} WHEN ${mode} = 's' THEN b.u_${c} WHEN ${mode} = 'S' THEN b.i_${c}` +
    ` WHEN ${mode} = 'c' THEN COALESCE(o.${c}, b.u_${c}) WHEN ${mode} = 'C' THEN COALESCE(o.${c}, b.i_${c}) ELSE o.${c} END`
  );
};

const CAST: Record<Mutable, string> = { state: "operation_state", attempts: "int", progress: "jsonb", result: "jsonb", error: "text", started_at: "timestamptz", finished_at: "timestamptz" };
// JSON values are read as json and cast to jsonb: json_to_recordset fills a jsonb column about
// ten times slower than a json one followed by a cast (PostgreSQL 15: 24 ms against 2.5 ms for
// 1,000 rows of two small objects).
const readAs = (type: string) => (type === "jsonb" ? "json" : type);
const column = (name: string, type: string) => (type === "jsonb" ? `${name}::jsonb AS ${name}` : name);

/** Dates as ISO strings, which PostgreSQL reads exactly (before JSON.stringify: its toJSON calls take it off its fast path, at half the speed). */
const iso = (value: unknown): unknown => (value instanceof Date ? value.toISOString() : value);


// $1: the jobs, one JSON object each (identity, insert values i_*, modes, update values u_*);
// $2: the status rows, in order. JSON rather than one array parameter per column: node-postgres
// writes array literals element by element in JavaScript (quoting every string and JSON value,
// formatting every Date), which cost more than the rest of the flush; JSON.stringify is native,
// and PostgreSQL parses the text once (json_to_recordset).
/** The flush statement (exported for EXPLAIN). */
export const FLUSH_SQL = `
WITH b AS (
  SELECT id, created_at, name, queue, data::jsonb AS data, max_attempts,
      ${MUTABLE.map((c) => column(`i_${c}`, CAST[c])).join(", ")}, modes,
      ${MUTABLE.map((c) => column(`u_${c}`, CAST[c])).join(", ")}
    FROM json_to_recordset($1::json)
    AS t(id text, created_at timestamptz, name text, queue text, data json, max_attempts int,
      ${MUTABLE.map((c) => `i_${c} ${readAs(CAST[c])}`).join(", ")}, modes text,
      ${MUTABLE.map((c) => `u_${c} ${readAs(CAST[c])}`).join(", ")})
), prev AS (
  -- One index probe per job of the batch, whatever the planner thinks of the table's size
  -- (LIMIT keeps the subquery from being flattened into a join that a young table, whose
  -- statistics say "small", answers with a sequential scan of all of operations per flush).
  SELECT o.id, o.created_at, o.state, o.queued_after FROM b CROSS JOIN LATERAL (SELECT id, created_at, state, queued_after FROM operations WHERE id = b.id LIMIT 1) o
), stale AS (
  DELETE FROM operation_status s
   WHERE s.operation_id = ANY (ARRAY(SELECT prev.id FROM prev JOIN b ON b.id = prev.id WHERE prev.created_at < b.created_at AND prev.queued_after IS NULL))
), upd AS (
  UPDATE operations o SET
    name = CASE WHEN ${TAKEN_OVER} THEN b.name ELSE o.name END,
    queue = CASE WHEN ${TAKEN_OVER} THEN b.queue ELSE o.queue END,
    data = CASE WHEN ${TAKEN_OVER} THEN b.data ELSE o.data END,
    max_attempts = CASE WHEN ${TAKEN_OVER} THEN b.max_attempts ELSE o.max_attempts END,
    -- A deferred request's row keeps its submitter (and site); an older job's row gives them up.
    submitted_by = CASE WHEN o.queued_after IS NULL AND o.created_at < b.created_at THEN NULL ELSE o.submitted_by END,
    submitted_site = CASE WHEN o.queued_after IS NULL AND o.created_at < b.created_at THEN NULL ELSE o.submitted_site END,
    queued_after = NULL,
    ${MUTABLE.map(mutableSql).join(",\n    ")},
    created_at = b.created_at,
    updated_at = now()
  -- Only rows that exist (prev), by index: most flushes carry only new jobs.
  FROM b WHERE o.id = ANY (ARRAY(SELECT id FROM prev)) AND o.id = b.id AND (o.created_at <= b.created_at OR o.queued_after IS NOT NULL)
    -- Removed (cancelled before it started, written at once by the API): final. A runner event
    -- of the same job still in a buffer is older than that, so it must not reopen the row.
    AND NOT (o.state = 'REMOVED' AND o.created_at = b.created_at)
  RETURNING o.id
), ins AS (
  INSERT INTO operations AS o (id, name, queue, data, max_attempts, ${MUTABLE.join(", ")}, created_at, updated_at)
  SELECT b.id, b.name, b.queue, b.data, b.max_attempts, ${MUTABLE.map((c) => `b.i_${c}`).join(", ")}, b.created_at, now()
    FROM b WHERE NOT EXISTS (SELECT 1 FROM prev WHERE prev.id = b.id)
  ON CONFLICT (id) DO NOTHING
  RETURNING o.id
), applied AS (
  SELECT id FROM upd UNION ALL SELECT id FROM ins
), was_delayed AS (
  SELECT prev.id FROM prev JOIN b ON b.id = prev.id WHERE prev.created_at = b.created_at AND prev.state = 'DELAYED'
), st AS (
  INSERT INTO operation_status (operation_id, kind, state, attempt, progress, message, at)
  SELECT s.id, s.kind, s.state, s.attempt, s.progress::jsonb, s.message, s.at
    FROM ROWS FROM (json_to_recordset($2::json)
      AS (id text, kind operation_status_kind, state operation_state, attempt int, progress json, message text, at timestamptz, if_not_delayed bool))
      WITH ORDINALITY AS s(id, kind, state, attempt, progress, message, at, if_not_delayed, ord)
    JOIN applied a ON a.id = s.id
    LEFT JOIN was_delayed w ON w.id = s.id
   WHERE NOT (COALESCE(s.if_not_delayed, false) AND w.id IS NOT NULL)
   ORDER BY s.ord
)
SELECT b.id FROM b
 WHERE b.id NOT IN (SELECT id FROM applied)
   AND NOT EXISTS (SELECT 1 FROM prev WHERE prev.id = b.id
                    AND ((prev.created_at > b.created_at AND prev.queued_after IS NULL) OR (prev.created_at = b.created_at AND prev.state = 'REMOVED')))`;

export interface BatchOptions {
  /** A flush starts at most this long after the first event it carries (default 100 ms). */
  intervalMs?: number;
  /** A flush starts at once when this many events wait (default 2,000). */
  maxEvents?: number;
  /** Events kept while PostgreSQL is unreachable; beyond it the oldest are dropped (default 100,000). */
  maxBuffered?: number;
  /** Told about a failed flush (the events are kept and retried) or dropped events. */
  onError?: (err: unknown, context: { events: number; dropped: number }) => void;
}

// The longest wait between flush attempts while PostgreSQL fails them.
const MAX_BACKOFF_MS = 5_000;

/** Events PostgreSQL rejects as data (not a failure of the connection). */
class UnstorableEvents extends Error {
  constructor(override readonly cause: unknown) {
    super("events PostgreSQL cannot store");
  }
}

/** A flush that failed for PostgreSQL (not its data), with the events it did not write. */
class FlushFailed extends Error {
  constructor(
    override readonly cause: unknown,
    readonly unwritten: Buffered[],
  ) {
    super("operation history flush failed");
  }
}

/** The operation history for the JobRunner, batched (see the file's comment). */
export class BatchedOperationHistory implements OperationRecorder {
  private buffer: Buffered[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private readonly direct: OperationHistory;
  private readonly intervalMs: number;
  private readonly maxEvents: number;
  private readonly maxBuffered: number;
  /** After a failed flush: the next one waits until then (backing off while PostgreSQL is down). */
  private retryAt = 0;
  private backoffMs = 0;
  /** Flushes done and statements sent, for tests and the bench. */
  readonly stats = { flushes: 0, events: 0, dropped: 0, failures: 0 };

  constructor(
    private readonly db: Queryable,
    private readonly options: BatchOptions = {},
  ) {
    this.direct = new OperationHistory(db);
    this.intervalMs = options.intervalMs ?? 100;
    this.maxEvents = options.maxEvents ?? 2_000;
    this.maxBuffered = options.maxBuffered ?? 100_000;
  }

  submitted(op: OperationRef, state: "WAITING" | "DELAYED", submittedBy: string | null, site?: string | null): Promise<void> {
    return this.direct.submitted(op, state, submittedBy, site);
  }

  removed(op: OperationRef, by: string | null): Promise<void> {
    return this.direct.removed(op, by);
  }

  deferred(op: OperationRef, queuedAfter: string, by: string | null, site?: string | null): Promise<void> {
    return this.direct.deferred(op, queuedAfter, by, site);
  }

  started(op: OperationRef, attempt: number): Promise<void> {
    return this.push(op, { type: "started", attempt, at: new Date() });
  }

  delayed(op: OperationRef, reason: string): Promise<void> {
    return this.push(op, { type: "delayed", reason: historyText(reason), at: new Date() });
  }

  progress(op: OperationRef, value: unknown): Promise<void> {
    return this.push(op, { type: "progress", value, at: new Date() });
  }

  finished(op: OperationRef, outcome: { state: "COMPLETED" | "FAILED" | "DELAYED"; attempts: number; result?: unknown; error?: string; progress?: unknown }): Promise<void> {
    const error = outcome.error === undefined ? undefined : historyText(outcome.error);
    return this.push(op, { type: "finished", ...outcome, error, at: new Date() });
  }

  // A timer that fired is forgotten first: one that fires while a flush is in flight must not
  // stay set and keep the next events from scheduling theirs.
  private readonly onTimer = (): void => {
    this.timer = undefined;
    void this.flushOnce();
  };

  /** Events waiting for a flush. */
  get pending(): number {
    return this.buffer.length;
  }

  /** Writes everything buffered now (one statement per `maxEvents`); resolves when done or given up on. */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.flushing) await this.flushing;
    while (this.buffer.length > 0) {
      const failuresBefore = this.stats.failures;
      await this.flushOnce();
      if (this.stats.failures > failuresBefore) return; // PostgreSQL unreachable: the caller decides
    }
  }

  private push(op: OperationRef, event: Event): Promise<void> {
    this.buffer.push({ op, event });
    if (this.buffer.length > this.maxBuffered) {
      const dropped = this.buffer.splice(0, this.buffer.length - this.maxBuffered).length;
      this.stats.dropped += dropped;
      this.options.onError?.(new Error(`operation history buffer full: ${dropped} oldest events dropped`), { events: this.buffer.length, dropped });
    }
    // A full batch goes at once — unless PostgreSQL just failed: then the retry waits its turn.
    if (this.buffer.length >= this.maxEvents && !this.flushing && Date.now() >= this.retryAt) void this.flushOnce();
    else this.timer ??= setTimeout(this.onTimer, this.nextDelay());
    return Promise.resolve();
  }

  /** The next flush's delay: an interval, or longer while a failed flush backs off. */
  private nextDelay(): number {
    return Math.max(this.intervalMs, this.retryAt - Date.now());
  }

  private flushOnce(): Promise<void> {
    if (this.flushing) return this.flushing;
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.buffer.splice(0, this.maxEvents);
    if (batch.length === 0) return Promise.resolve();
    const run = this.writeIsolating(batch).then(
      ({ missed, written }) => {
        this.stats.flushes++;
        this.stats.events += written;
        this.backoffMs = 0;
        this.retryAt = 0;
        if (missed.length > 0) this.buffer.unshift(...missed);
      },
      (err: unknown) => {
        const { cause, unwritten } = err instanceof FlushFailed ? err : { cause: err, unwritten: batch };
        this.stats.failures++;
        // Backs off (an interval, doubling up to MAX_BACKOFF_MS): a refused connection answers in a
        // millisecond, and events keep coming.
        this.backoffMs = Math.min(Math.max(this.intervalMs, this.backoffMs * 2), MAX_BACKOFF_MS);
        this.retryAt = Date.now() + this.backoffMs;
        this.buffer.unshift(...unwritten);
        this.options.onError?.(cause, { events: this.buffer.length, dropped: 0 });
      },
    );
    this.flushing = run.finally(() => {
      this.flushing = undefined;
      if (this.buffer.length > 0) this.timer ??= setTimeout(this.onTimer, this.nextDelay());
    });
    return this.flushing;
  }

  /**
   * Writes a batch; one PostgreSQL cannot take (a value its JSON input rejects, a date out of
   * range) is cut in halves until the offending event is alone, and only that event is dropped
   * (counted and reported) — the rest of the batch is written, in order, as the per-event path
   * would have. Any other failure (PostgreSQL unreachable) throws FlushFailed with the events not
   * written yet, after the missed ones of the parts already written.
   */
  private async writeIsolating(batch: Buffered[]): Promise<{ missed: Buffered[]; written: number }> {
    const missed: Buffered[] = [];
    let written = 0;
    const parts: Buffered[][] = [batch];
    while (parts.length > 0) {
      const part = parts.shift()!;
      try {
        const again = await this.write(part);
        missed.push(...again);
        written += part.length - again.length;
      } catch (err) {
        if (!(err instanceof UnstorableEvents)) throw new FlushFailed(err, [...missed, ...part, ...parts.flat()]);
        if (part.length === 1) {
          this.stats.dropped++;
          const { op } = part[0]!;
          this.options.onError?.(new Error(`operation history: an event of job ${op.queue}/${op.id} PostgreSQL cannot store was dropped: ${(err.cause as Error)?.message ?? err.cause}`), { events: this.buffer.length, dropped: 1 });
          continue;
        }
        const mid = part.length >> 1;
        parts.unshift(part.slice(0, mid), part.slice(mid));
      }
    }
    return { missed, written };
  }

  /** One statement for a batch; resolves to the events to write again (their row appeared meanwhile). */
  /** The statement and parameters of one flush (exported for EXPLAIN). */
  statementFor(batch: readonly Buffered[]): { groups: Map<string, { op: OperationRef; items: Buffered[] }>; params: unknown[] } {
    // Group by job id, in order; a newer job of a recycled id replaces the older one's events.
    const groups = new Map<string, { op: OperationRef; items: Buffered[] }>();
    for (const item of batch) {
      const group = groups.get(item.op.id);
      if (!group || group.op.createdAt < item.op.createdAt) groups.set(item.op.id, { op: item.op, items: [item] });
      else if (group.op.createdAt === item.op.createdAt) group.items.push(item);
    }
    const jobs = [...groups.values()].map((g) => fold(g.op, g.items));
    // Nulls are left out (a missing key reads as NULL), and an update value equal to the
    // insert's is not sent again (mode S / C): PostgreSQL's JSON parsing is most of the
    // statement's cost, and it goes by the key.
    const rows = jobs.map(({ op, insert: ins, modes, values }) => {
      let sent = "";
      const update: unknown[] = [];
      for (let i = 0; i < modes.length; i++) {
        const m = modes[i]!;
        const same = m !== "k" && values[i] === ins[i];
        sent += same ? m.toUpperCase() : m;
        update.push(m === "k" || same ? undefined : iso(values[i]));
      }
      return {
        id: op.id,
        created_at: new Date(op.createdAt).toISOString(),
        name: op.name,
        queue: op.queue,
        data: json(op.data) ?? undefined,
        max_attempts: op.maxAttempts,
        i_state: ins[STATE],
        i_attempts: ins[ATTEMPTS],
        i_progress: ins[PROGRESS] ?? undefined,
        i_result: ins[RESULT] ?? undefined,
        i_error: ins[ERROR] ?? undefined,
        i_started_at: iso(ins[STARTED_AT] ?? undefined),
        i_finished_at: iso(ins[FINISHED_AT] ?? undefined),
        modes: sent,
        u_state: update[STATE],
        u_attempts: update[ATTEMPTS],
        u_progress: update[PROGRESS] ?? undefined,
        u_result: update[RESULT] ?? undefined,
        u_error: update[ERROR] ?? undefined,
        u_started_at: update[STARTED_AT] ?? undefined,
        u_finished_at: update[FINISHED_AT] ?? undefined,
      };
    });
    const params: unknown[] = [JSON.stringify(rows), JSON.stringify(jobs.flatMap((j) => j.statuses))];
    return { groups, params };
  }

  private async write(batch: readonly Buffered[]): Promise<Buffered[]> {
    let statement;
    try {
      statement = this.statementFor(batch);
    } catch (err) {
      throw new UnstorableEvents(err); // e.g. a date out of range
    }
    const { groups, params } = statement;
    let rows: Array<{ id: string }>;
    try {
      ({ rows } = await this.db.query<{ id: string }>(FLUSH_SQL, params));
    } catch (err) {
      // SQLSTATE class 22, data exception: the input, not the connection.
      if (typeof (err as { code?: unknown }).code === "string" && (err as { code: string }).code.startsWith("22")) throw new UnstorableEvents(err);
      throw err;
    }
    if (rows.length === 0) return [];
    const missed = new Set(rows.map((r) => r.id));
    return [...groups.values()].filter((g) => missed.has(g.op.id)).flatMap((g) => g.items);
  }
}

/** What the reconcile needs to know of a BullMQ job (see reconcileOperationHistory). */
export interface QueuedJobView {
  timestamp: number;
  attemptsMade: number;
  state: string;
  returnvalue?: unknown;
  failedReason?: string;
}

/**
 * After a SIGKILL the history may lack the last ~100 ms of a worker's events: a job BullMQ
 * completed or failed can still read ACTIVE (or DELAYED, WAITING) here. This asks BullMQ about
 * history rows left unfinished and untouched for `minAgeMs` and writes what BullMQ knows
 * (COMPLETED with its result, FAILED with its reason). Jobs BullMQ no longer has, or that
 * are still active or waiting there, are left as they are. Run by every worker at start (a
 * killed worker's replacement reconciles what it lost); returns the rows corrected.
 */
export async function reconcileOperationHistory(db: Queryable, find: (queue: string, id: string) => Promise<QueuedJobView | undefined>, options: { minAgeMs: number; limit?: number }): Promise<number> {
  const { rows } = await db.query<{ id: string; name: string; queue: string; data: unknown; max_attempts: number; created_at: Date; queued_after: string | null }>(
    `SELECT id, name, queue, data, max_attempts, created_at, queued_after FROM operations
      WHERE state IN ('ACTIVE', 'DELAYED', 'WAITING') AND updated_at < now() - make_interval(secs => $1::float8 / 1000)
      ORDER BY updated_at LIMIT $2`,
    [options.minAgeMs, options.limit ?? 1_000],
  );
  const history = new OperationHistory(db);
  let fixed = 0;
  for (const row of rows) {
    let awaited: QueuedJobView | undefined;
    if (row.queued_after !== null) {
      // A deferred request: BullMQ creates its job in the same step that ends the job it waits
      // for. That one first: still there and not ended, the request waits in its slot. Looked
      // up the other way round, that job could end between the two look-ups and its new job be
      // missed (found by review).
      awaited = await find(row.queue, row.queued_after);
      if (awaited && awaited.state !== "completed" && awaited.state !== "failed") continue;
    }
    const job = await find(row.queue, row.id);
    if (!job && row.queued_after !== null) {
      // Ended (or gone) without creating it: the request went with Redis (emptied, the job
      // removed). Recorded, not left WAITING forever.
      if (await neverQueued(db, row.id, row.queued_after, awaited ? awaited.state : "gone from Redis")) fixed++;
      continue;
    }
    // A deferred request's row is its job's, whatever the job's timestamp (see OperationHistory).
    if (!job || (row.queued_after === null && job.timestamp !== row.created_at.getTime())) continue;
    const op: OperationRef = { id: row.id, name: row.name, queue: row.queue, createdAt: job.timestamp, maxAttempts: row.max_attempts, data: row.data };
    if (job.state === "completed") {
      await history.finished(op, { state: "COMPLETED", attempts: job.attemptsMade, result: job.returnvalue });
    } else if (job.state === "failed") {
      await history.finished(op, { state: "FAILED", attempts: job.attemptsMade, error: job.failedReason ?? "failed" });
    } else continue;
    fixed++;
  }
  return fixed;
}

/**
 * A deferred request's row whose job was never created: REMOVED, with why — in its history and
 * as its error, which `GET /api/operations/:id` and its callback (webhook-send's backstop
 * queues it as `cancelled`) carry, so a submitter learns to submit it again.
 */
async function neverQueued(db: Queryable, id: string, awaited: string, awaitedState: string): Promise<boolean> {
  const message = `never queued: operation ${awaited}, which it waited for, is ${awaitedState} and its job was not created (Redis emptied or the job removed); submit it again`;
  const { rowCount } = await db.query(
    `WITH op AS (
       UPDATE operations SET state = 'REMOVED', error = $3, finished_at = now(), queued_after = NULL, updated_at = now()
        WHERE id = $1 AND queued_after = $2 AND state = 'WAITING' RETURNING id
     )
     INSERT INTO operation_status (operation_id, kind, state, message) SELECT id, 'STATE', 'REMOVED', $3 FROM op`,
    [id, awaited, message],
  );
  return (rowCount ?? 0) > 0;
}
