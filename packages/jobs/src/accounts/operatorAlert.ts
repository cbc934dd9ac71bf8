import type { Logger } from "@fleet/core/logger";
import type { JobClient } from "@fleet/core/jobClient";
import type { Queryable } from "@fleet/db/pool";
import { writeLog } from "@fleet/db/sql/log";
import { enqueueNotifications } from "@fleet/db/sql/notifications";
import type { FleetJobs } from "../jobRegistry";

export interface OperatorAlert {
  level: "warn" | "error";
  /** What the alert is about, as migration_log subjects name it (`server:mig1`, `batch:4`). */
  subject: string;
  /** One line: the mail subject and the log message. */
  summary: string;
  details?: Record<string, unknown>;
  /** Same key, same alert: sent once (e.g. `breaker:mig1:<opened at>`). */
  dedupeKey: string;
}

/**
 * The one way account jobs tell the operators that something needs them: a warn/error log
 * line, a migration_log row, and an email to NOTIFY_OPERATORS through the outbox (so an SMTP
 * outage delays it, never loses it). A generic alert channel (webhook, pager) can be routed
 * from here later without touching the callers.
 */
export async function alertOperators(deps: { db: Queryable; jobs?: JobClient<FleetJobs>; operators: readonly string[]; log: Logger; job?: string }, alert: OperatorAlert): Promise<void> {
  deps.log[alert.level]({ subject: alert.subject, alert: alert.summary, ...alert.details }, "operator alert");
  await writeLog(deps.db, [{ level: alert.level, ...(deps.job ? { job: deps.job } : {}), subject: alert.subject, message: `alert: ${alert.summary}`.slice(0, 2000), ...(alert.details ? { details: alert.details } : {}) }]);
  const details = alert.details ? Object.entries(alert.details).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join("\n") : "";
  const queued = await enqueueNotifications(
    deps.db,
    deps.operators.map((to) => ({ dedupeKey: `alert:${alert.dedupeKey}:${to}`, recipient: to, template: "operator-alert", data: { summary: alert.summary, subject: alert.subject, details } })),
  );
  if (queued > 0) await deps.jobs?.enqueue("notify-send", {}).catch((err: unknown) => deps.log.warn({ err }, "could not enqueue notify-send for an alert; the every-minute round sends it"));
}
