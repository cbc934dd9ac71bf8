import type { Queryable } from "../pool";

/**
 * Operator alerts (alerts table). An alert is raised by inserting it under its dedupe key, so
 * several scheduler replicas, or one checking every 30 s, raise it once. The rate limit is
 * decided in the same statement (alerts of the event sent in the last hour); a suppressed alert
 * is still recorded. Its webhook is claimed like an outbox row (FOR UPDATE SKIP LOCKED; a claim
 * lapses after `leaseMs`, so a replica that died while posting leaves it to the next).
 */

export interface NewAlert {
  event: string;
  dedupeKey: string;
  summary: string;
  details: Record<string, unknown>;
  /** Channels it should go to if not rate-limited. */
  channels: readonly string[];
}

export interface RaisedAlert {
  id: number;
  suppressed: boolean;
  channels: string[];
}

/** Inserts the alert unless its key exists; undefined when it did (already raised). */
export async function raiseAlert(db: Queryable, alert: NewAlert, perHour: number): Promise<RaisedAlert | undefined> {
  const { rows } = await db.query<{ id: string; suppressed: boolean; channels: string }>(
    `WITH recent AS (
       SELECT count(*) AS n FROM alerts WHERE event = $1 AND NOT suppressed AND created_at > now() - interval '1 hour'
     )
     INSERT INTO alerts (event, dedupe_key, summary, details, channels, suppressed, webhook_status, webhook_next_at)
     SELECT $1, $2, $3, $4::jsonb, CASE WHEN r.n >= $5 THEN '' ELSE $6 END, r.n >= $5,
            CASE WHEN r.n < $5 AND 'webhook' = ANY(string_to_array($6, ',')) THEN 'PENDING'::webhook_status END,
            CASE WHEN r.n < $5 AND 'webhook' = ANY(string_to_array($6, ',')) THEN now() END
       FROM recent r
     ON CONFLICT (dedupe_key) DO NOTHING
     RETURNING id, suppressed, channels`,
    [alert.event, alert.dedupeKey, alert.summary.slice(0, 1000), JSON.stringify(alert.details), perHour, alert.channels.join(",")],
  );
  const r = rows[0];
  return r ? { id: Number(r.id), suppressed: r.suppressed, channels: r.channels ? r.channels.split(",") : [] } : undefined;
}

export interface AlertWebhook {
  id: number;
  event: string;
  summary: string;
  details: Record<string, unknown>;
  createdAt: Date;
  attempts: number;
}

export async function claimAlertWebhooks(db: Queryable, limit: number, leaseMs: number): Promise<AlertWebhook[]> {
  const { rows } = await db.query<AlertWebhook & { id: string }>(
    `UPDATE alerts SET webhook_status = 'SENDING', webhook_attempts = webhook_attempts + 1,
            webhook_next_at = now() + make_interval(secs => $2::float8 / 1000)
      WHERE id IN (SELECT id FROM alerts
                    WHERE webhook_status IN ('PENDING', 'FAILED', 'SENDING') AND webhook_next_at <= now()
                    ORDER BY webhook_next_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
      RETURNING id, event, summary, details, created_at AS "createdAt", webhook_attempts AS attempts`,
    [limit, leaseMs],
  );
  return rows.map((r) => ({ ...r, id: Number(r.id) }));
}

/** SENT, FAILED until nextAt, or GAVE_UP (nextAt null). */
export async function recordAlertWebhook(db: Queryable, id: number, outcome: { sent: boolean; error: string | null; nextAt: Date | null }): Promise<void> {
  await db.query(
    `UPDATE alerts SET webhook_status = CASE WHEN $2 THEN 'SENT'::webhook_status WHEN $4::timestamptz IS NULL THEN 'GAVE_UP'::webhook_status ELSE 'FAILED'::webhook_status END,
            webhook_next_at = CASE WHEN $2 THEN NULL ELSE $4 END, last_error = $3, sent_at = CASE WHEN $2 THEN now() ELSE sent_at END
      WHERE id = $1 AND webhook_status = 'SENDING'`,
    [id, outcome.sent, outcome.error?.slice(0, 2000) ?? null, outcome.nextAt],
  );
}

/** Breakers an opened-alert was raised for and no closed-alert yet: link → openedAt (ms). */
export async function openBreakerAlerts(db: Queryable): Promise<Array<{ link: string; openedAt: number }>> {
  const { rows } = await db.query<{ link: string; opened_at: string }>(
    `SELECT o.details->>'link' AS link, o.details->>'openedAtMs' AS opened_at FROM alerts o
      WHERE o.event = 'breaker-opened'
        AND NOT EXISTS (SELECT 1 FROM alerts c WHERE c.dedupe_key = 'breaker-closed:' || substr(o.dedupe_key, length('breaker-opened:') + 1))`,
  );
  return rows.map((r) => ({ link: r.link, openedAt: Number(r.opened_at) }));
}

/**
 * What the alert checks need of the migration every pass, in one round trip, kept cheap: range
 * counts (a range is BATCH_SIZE files), RETRYING files (partial index), and the failures of the
 * period (FAIL rows only). File totals are read by runCounts, only when a run has finished.
 */
export interface AlertFigures {
  rangesPending: number;
  rangesProcessing: number;
  rangesComplete: number;
  lastRangeId: number;
  filesRetrying: number;
  /** Files that failed within the period, by error category. */
  recentFailures: Record<string, number>;
}

export async function alertFigures(db: Queryable, failurePeriodMs: number): Promise<AlertFigures> {
  const { rows } = await db.query(
    `SELECT
       (SELECT count(*) FROM migration_ranges WHERE status = 'PENDING')::int8 AS "rangesPending",
       (SELECT count(*) FROM migration_ranges WHERE status = 'PROCESSING')::int8 AS "rangesProcessing",
       (SELECT count(*) FROM migration_ranges WHERE status = 'COMPLETE')::int8 AS "rangesComplete",
       (SELECT coalesce(max(id), 0) FROM migration_ranges)::int8 AS "lastRangeId",
       (SELECT count(*) FROM migration_files WHERE status = 'RETRYING')::int8 AS "filesRetrying",
       (SELECT coalesce(jsonb_object_agg(category, n), '{}'::jsonb) FROM (
          SELECT coalesce(error_category, 'unknown') AS category, count(*) AS n FROM migration_files
           WHERE status = 'FAIL' AND last_attempt_date > now() - make_interval(secs => $1::float8 / 1000)
           GROUP BY 1) f) AS "recentFailures"`,
    [failurePeriodMs],
  );
  const r = rows[0] as Record<string, unknown>;
  const n = (k: string) => Number(r[k] ?? 0);
  const failures = Object.fromEntries(Object.entries((r.recentFailures ?? {}) as Record<string, unknown>).map(([k, v]) => [k, Number(v)]));
  return { rangesPending: n("rangesPending"), rangesProcessing: n("rangesProcessing"), rangesComplete: n("rangesComplete"), lastRangeId: n("lastRangeId"), filesRetrying: n("filesRetrying"), recentFailures: failures };
}

/** The outcome of a finished run: files by status and bytes (a full count: call once per run). */
export async function runCounts(db: Queryable): Promise<{ filesSucceeded: number; filesFailed: number; filesKilled: number; bytesMigrated: number }> {
  const { rows } = await db.query(
    `SELECT count(*) FILTER (WHERE status = 'SUCCESS')::int8 AS s, count(*) FILTER (WHERE status = 'FAIL')::int8 AS f,
            count(*) FILTER (WHERE status = 'KILLED')::int8 AS k, coalesce(sum(size) FILTER (WHERE status = 'SUCCESS'), 0)::int8 AS b
       FROM migration_files`,
  );
  const r = rows[0] as Record<string, unknown>;
  return { filesSucceeded: Number(r.s), filesFailed: Number(r.f), filesKilled: Number(r.k), bytesMigrated: Number(r.b) };
}

export async function alertExists(db: Queryable, dedupeKey: string): Promise<boolean> {
  const { rows } = await db.query(`SELECT 1 FROM alerts WHERE dedupe_key = $1`, [dedupeKey]);
  return rows.length > 0;
}

const NO_WORKER_KEY = "alerts:no-worker-since";

/**
 * The start of the current stretch without a worker on the migration queue, shared by every
 * scheduler through PostgreSQL: the first to notice sets it, the others (and a restarted one)
 * read it, so the stretch has one dedupe key and is alerted once (found by review: each replica
 * kept its own start in memory and raised its own alert).
 */
export async function noWorkerSince(db: Queryable, now: Date): Promise<Date> {
  await db.query(`INSERT INTO sync_state (key, cursor, updated_at) VALUES ($1, $2, now()) ON CONFLICT (key) DO NOTHING`, [NO_WORKER_KEY, now.toISOString()]);
  const { rows } = await db.query<{ cursor: string | null }>(`SELECT cursor FROM sync_state WHERE key = $1`, [NO_WORKER_KEY]);
  const at = rows[0]?.cursor ? new Date(rows[0].cursor) : now;
  return Number.isNaN(at.getTime()) ? now : at;
}

/** A worker is back (or nothing is left to do): the stretch without one is over. */
export async function workerSeen(db: Queryable): Promise<void> {
  await db.query(`DELETE FROM sync_state WHERE key = $1`, [NO_WORKER_KEY]);
}
