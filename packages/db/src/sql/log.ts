import type { Queryable } from "../pool";

/** One migration_log entry: what an operator reads to learn what a job did to a subject. */
export interface LogEntry {
  level: "debug" | "info" | "warn" | "error";
  job?: string;
  /** What the entry is about: `range:12`, `file:345`, `account:alice@example.org`. */
  subject?: string;
  message: string;
  details?: Record<string, unknown>;
}

/** Writes entries in one statement. */
export async function writeLog(db: Queryable, entries: readonly LogEntry[]): Promise<void> {
  if (entries.length === 0) return;
  await db.query(
    `INSERT INTO migration_log (level, job, subject, message, details)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[])`,
    [
      entries.map((e) => e.level),
      entries.map((e) => e.job ?? null),
      entries.map((e) => e.subject ?? null),
      entries.map((e) => e.message),
      entries.map((e) => (e.details ? JSON.stringify(e.details) : null)),
    ],
  );
}

/** Deletes log rows older than the cutoff in batches (no long lock on a big table). */
export async function pruneLog(db: Queryable, olderThanMs: number, batch = 10_000): Promise<number> {
  let total = 0;
  for (;;) {
    const { rowCount } = await db.query(
      `DELETE FROM migration_log WHERE id IN (
         SELECT id FROM migration_log WHERE time < now() - make_interval(secs => $1::float8 / 1000) ORDER BY id LIMIT $2)`,
      [olderThanMs, batch],
    );
    total += rowCount ?? 0;
    if ((rowCount ?? 0) < batch) return total;
  }
}

/** The newest entry of a job with this message (and subject, when given): what the last run of something reported. */
export async function lastLogEntry(db: Queryable, job: string, message: string, subject?: string): Promise<(LogEntry & { at: Date }) | undefined> {
  const { rows } = await db.query<LogEntry & { at: Date }>(
    `SELECT time AS at, level, job, subject, message, details FROM migration_log
      WHERE job = $1 AND message = $2 AND ($3::text IS NULL OR subject = $3)
      ORDER BY id DESC LIMIT 1`,
    [job, message, subject ?? null],
  );
  return rows[0];
}

/** The newest `limit` entries (of a job, about a subject, when given), oldest first: `fleet log`. */
export async function readLog(db: Queryable, filter: { job?: string; subject?: string; limit: number }): Promise<Array<LogEntry & { at: Date }>> {
  const { rows } = await db.query<LogEntry & { at: Date }>(
    `SELECT * FROM (
       SELECT id, time AS at, level, job, subject, message, details FROM migration_log
        WHERE ($1::text IS NULL OR job = $1) AND ($2::text IS NULL OR subject = $2)
        ORDER BY id DESC LIMIT $3) newest
      ORDER BY id`,
    [filter.job ?? null, filter.subject ?? null, filter.limit],
  );
  return rows.map(({ id: _id, ...entry }: LogEntry & { at: Date; id?: unknown }) => entry);
}
