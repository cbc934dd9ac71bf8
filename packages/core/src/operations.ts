import type { Job, Queue } from "bullmq";
import type { Redis } from "ioredis";
import { requestCancel } from "./jobCancel";
import type { HistoryState, OperationRef } from "./operationRecorder";
import type { AnyJobContract } from "./jobDefinition";
import type { JobClient } from "./jobClient";

/**
 * Operations as operators see them (dashboard API, `fleet ops`): a BullMQ job of the catalogue,
 * found by id in any of the fleet's queues, described in plain JSON, listed by state, cancelled.
 */
export const OPERATION_STATES = ["waiting", "active", "delayed", "prioritized", "waiting-children", "completed", "failed"] as const;
export type OperationState = (typeof OPERATION_STATES)[number];

/**
 * Job ids Fleet derives or accepts: anything else is simply not an operation. Up to 255: the
 * longest the API gives is a site client's, `site-<site, 32>-<job>-<client id, 150>` (210 with
 * the longest job name today; 200 refused a site's own operation as unknown).
 */
export const OPERATION_ID = /^[A-Za-z0-9_.:@-]{1,255}$/;

export interface OperationSummary {
  id: string | undefined;
  name: string;
  queue: string;
  state: string;
  progress: unknown;
  attempts: number;
  maxAttempts: number;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  error: string | null;
}

export interface OperationDetail extends OperationSummary {
  data: unknown;
  result: unknown;
  log: string[];
  logCount: number;
}

/**
 * An id that names a job in more than one queue: BullMQ numbers jobs per queue, and jobs queued
 * before Fleet gave ids unique across queues (JobClient) may share one. Acting on the first
 * found would act on the wrong job (found by a security review: a cancel removed another
 * queue's job).
 */
export class AmbiguousOperationError extends Error {
  constructor(
    readonly id: string,
    readonly queues: string[],
  ) {
    super(`operation ${id} names a job in each of the queues ${queues.join(", ")} (jobs queued before ids were unique across queues): act on it from the board (/queues), which shows each queue's`);
  }
}

/** The job an id names, in whichever queue; throws AmbiguousOperationError when it names several. */
export async function findOperation(queues: readonly Queue[], id: string): Promise<{ job: Job; queue: Queue } | undefined> {
  if (!OPERATION_ID.test(id)) return undefined;
  const found: Array<{ job: Job; queue: Queue }> = [];
  for (const queue of queues) {
    // BullMQ keeps its own keys beside the jobs' (`meta`, `events`, `wait`, `id`…): getJob of
    // such a name reads that key as a job with no name or time, or fails on a key of another
    // type (found by a security review: 500s on GET /api/operations/meta, cancel of `id`).
    // Those are no operation.
    const job = await queue.getJob(id).catch((err: unknown) => {
      if (String((err as Error)?.message ?? err).startsWith("WRONGTYPE")) return undefined;
      throw err;
    });
    if (job && isJob(job)) found.push({ job, queue });
  }
  if (found.length > 1) throw new AmbiguousOperationError(id, found.map((f) => f.queue.name));
  return found[0];
}

/** A job BullMQ stored (a name and a creation time), not one of its own keys read as one. */
export function isJob(job: Job): boolean {
  return typeof job.name === "string" && job.name.length > 0 && Number.isFinite(job.timestamp) && job.timestamp > 0;
}

export async function summarizeOperation(job: Job, knownState?: string): Promise<OperationSummary> {
  return {
    id: job.id,
    name: job.name,
    queue: job.queueName,
    state: knownState ?? (await job.getState()),
    progress: job.progress,
    attempts: job.attemptsMade,
    maxAttempts: job.opts.attempts ?? 1,
    createdAt: new Date(job.timestamp).toISOString(),
    startedAt: job.processedOn ? new Date(job.processedOn).toISOString() : null,
    finishedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
    error: job.failedReason || null,
  };
}

/** The summary plus data, result and the job's log (its last 200 lines). */
export async function describeOperation(job: Job, queue: Queue): Promise<OperationDetail> {
  // The job's fields were read before its state: a job that finished in between would show
  // "failed" with the attempts and error of before. A finished state re-reads the fields.
  const state = await job.getState();
  const settled = (state === "completed" || state === "failed") && !job.finishedOn && job.id ? ((await queue.getJob(job.id)) ?? job) : job;
  const logs = settled.id ? await queue.getJobLogs(settled.id, -200, -1) : { logs: [], count: 0 };
  return { ...(await summarizeOperation(settled, state)), data: settled.data, result: settled.returnvalue ?? null, log: logs.logs, logCount: logs.count };
}

/**
 * The Postgres history of operations (packages/db/src/sql/operations.ts), read when BullMQ no
 * longer has a job (pruned after KEEP_COMPLETED / KEEP_FAILED, removed, Redis emptied).
 */
export interface OperationHistoryReader {
  find(id: string): Promise<OperationDetail | undefined>;
  /** Newest first; `state` in the API's names ("removed" exists only here). */
  list(state: string | undefined, limit: number): Promise<OperationSummary[]>;
  /**
   * The operations submitted for `site` (recorded at submission), newest first (creation time,
   * then id), matching `filter`, at most `limit`, strictly after `after`.
   */
  listSite(site: string, filter: SiteFilter, limit: number, after?: ListCursor): Promise<OperationSummary[]>;
  /** Who submitted the operation recorded under `id`, for which site, and when its job was created; undefined if none is recorded. */
  submitter(id: string): Promise<{ submittedBy: string | null; site: string | null; createdAt: number } | undefined>;
}

/** Which of a site's history rows to read: in these states (all: undefined), of this job (all: undefined). */
export interface SiteFilter {
  states?: readonly HistoryState[];
  name?: string;
}

/** A place in a site's listing (newest first): the operation last shown; the next page starts after it. */
export interface ListCursor {
  createdAt: number;
  id: string;
}

/** The job in BullMQ if it is still there, else what the history recorded, else undefined. */
export async function showOperation(queues: readonly Queue[], history: OperationHistoryReader | undefined, id: string): Promise<OperationDetail | undefined> {
  if (!OPERATION_ID.test(id)) return undefined;
  const found = await findOperation(queues, id);
  if (found) return describeOperation(found.job, found.queue);
  return history?.find(id);
}

/**
 * Newest first, across every queue; with a history, operations BullMQ has forgotten are
 * merged in (BullMQ's view wins for a job both know).
 */
export async function listOperations(queues: readonly Queue[], state: OperationState | undefined, limit: number, history?: OperationHistoryReader): Promise<OperationSummary[]> {
  const types = state ? [state] : [...OPERATION_STATES];
  const found = (await Promise.all(queues.map((q) => q.getJobs(types, 0, limit - 1)))).flat();
  found.sort((a, b) => b.timestamp - a.timestamp);
  const live = await Promise.all(found.slice(0, limit).map((job) => summarizeOperation(job)));
  if (!history) return live;
  const seen = new Set(live.map((op) => op.id));
  const past = (await history.list(state, limit)).filter((op) => !seen.has(op.id));
  // A job in BullMQ under another state than the history's last record is shown by BullMQ only.
  const missing = await Promise.all(
    past.map(async (op) => {
      const queue = queues.find((q) => q.name === op.queue);
      return queue && (await queue.getJobState(op.id!)) !== "unknown" ? undefined : op;
    }),
  );
  return [...live, ...missing.filter((op): op is OperationSummary => op !== undefined)]
    .sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt))
    .slice(0, limit);
}

/**
 * How many of a site's history rows one listing request looks at, at most (each is one BullMQ
 * look-up): a request that reaches it answers the page it has, short, with `next`, and the
 * client goes on from there. A filter matching few of a site's many unfinished operations would
 * otherwise walk all of them in one request (100,000 delayed operations under `waiting`: 3–4 s
 * of dashboard and Redis work, asked for by a read-only token). At least the largest page (500),
 * so a listing without a filter, which shows every row it looks at, never comes back short.
 */
export const SITE_LISTING_BUDGET = 1_000;

/**
 * The operations submitted for a site (the API's view for a site's token), newest first, and
 * where the next page starts when there may be more. Read from the history, the one place that
 * records who submitted a job for which site, with BullMQ's live view of each job still there
 * (same id, same creation time; a row whose id BullMQ now gives another job is left out, as GET
 * answers 404 for it).
 *
 * Exact under a state filter (and a job's name, which the history always has right), however
 * many operations the site has: the history's state can be
 * behind BullMQ's (a delayed job BullMQ has since promoted is still DELAYED there, a finish is
 * written a moment later), so every unfinished row is a candidate, filtered on its live state,
 * and the walk goes on from a cursor until the page is full or the site's candidates are all
 * read. Not in one request, though: a request looks at `budget` candidates at most (one history
 * page per `page` of them, each an index walk from the cursor, and one BullMQ look-up each), then
 * answers the page so far, short or empty, with `next` just after the last candidate it looked
 * at. The pages a client reads by following `next` are the walk's, in order: no row is skipped
 * or shown twice, and the listing is over when a page has no `next`. A short page with `next`
 * is not the end (README, Sites).
 *
 * A finished row is a candidate only for its own state (completed, failed): the one way back
 * from there, a retry from the board, leaves the row finished until a worker starts the job, so
 * until then such a job is listed unfiltered and under `waiting` it is not (see README, Sites).
 */
export async function listSiteOperations(
  queues: readonly Queue[],
  history: OperationHistoryReader,
  site: string,
  filter: { state?: OperationState; name?: string },
  limit: number,
  after?: ListCursor,
  budget = SITE_LISTING_BUDGET,
): Promise<{ operations: OperationSummary[]; next?: ListCursor }> {
  const { state, name } = filter;
  // Filtered, pages of at least 500: a filter that matches few of the site's operations reads on in few round trips.
  const page = state === undefined ? limit : Math.max(limit, 500);
  const unfinished: HistoryState[] = ["WAITING", "DELAYED", "ACTIVE"];
  const candidates = state === undefined ? undefined : state === "completed" ? [...unfinished, "COMPLETED" as const] : state === "failed" ? [...unfinished, "FAILED" as const] : unfinished;
  const shown: OperationSummary[] = [];
  let left = Math.max(budget, limit);
  for (let from = after; ; ) {
    // Never more rows than the budget has look-ups left for.
    const size = Math.min(page, left);
    const rows = await history.listSite(site, { states: candidates, name }, size, from);
    left -= rows.length;
    const live = await Promise.all(rows.map((op) => liveView(queues, op)));
    for (const [i, op] of live.entries()) {
      if (op === undefined || (state !== undefined && op.state !== state)) continue;
      shown.push(op);
      // Full: the next page starts right after the last one shown (rows read beyond it are read again then).
      if (shown.length === limit) return { operations: shown, next: cursorOf(rows[i]!) };
    }
    if (rows.length < size) return { operations: shown };
    from = cursorOf(rows[rows.length - 1]!);
    // Out of look-ups: the next request goes on after the last row looked at.
    if (left === 0) return { operations: shown, next: from };
  }
}

/** A history row as BullMQ shows its job now; the row itself once BullMQ has no job; undefined when the id names another job. */
async function liveView(queues: readonly Queue[], op: OperationSummary): Promise<OperationSummary | undefined> {
  const queue = queues.find((q) => q.name === op.queue);
  const job = queue && op.id ? await queue.getJob(op.id).catch(() => undefined) : undefined;
  if (!job || !isJob(job)) return op;
  // Another job under a recycled id: the row is about one that is gone, and the id names the new one now.
  return new Date(job.timestamp).toISOString() === op.createdAt ? summarizeOperation(job) : undefined;
}

function cursorOf(row: OperationSummary): ListCursor {
  return { createdAt: Date.parse(row.createdAt), id: row.id ?? "" };
}

export type CancelOutcome =
  | { kind: "removed"; was: string }
  /** A job the fleet would re-create (its contract's notCancellable): left alone. */
  | { kind: "refused"; reason: string }
  | { kind: "requested"; receivers: number }
  | { kind: "no-listener" }
  | { kind: "finished"; state: string };

/**
 * Not started yet: removed. Running: every JobRunner hears the request and the one holding the
 * job aborts it (it then fails as `cancelled`, without retry). Finished: nothing to do. A job
 * whose contract says it is not cancellable (the fleet would re-create it): refused.
 */
export async function cancelOperation(
  redis: Redis,
  prefix: string,
  found: { job: Job; queue: Queue },
  contract?: AnyJobContract,
  requests?: Pick<JobClient<Record<string, AnyJobContract>>, "forgetRequest">,
): Promise<CancelOutcome> {
  const state = await found.job.getState();
  if (contract?.notCancellable && state !== "completed" && state !== "failed") return { kind: "refused", reason: contract.notCancellable };
  if (state === "waiting" || state === "delayed" || state === "prioritized" || state === "waiting-children") {
    // A durable kind's kept request (a remote command) goes first, and a cancel that cannot
    // forget it fails: left behind, the recovery pass would find its job missing and queue the
    // cancelled command again (the history's REMOVED, written after, is best effort).
    if (contract?.durable) {
      if (!requests) throw new Error(`cancelling "${found.job.name}" needs its kept request forgotten, and no job client was given to do it`);
      await requests.forgetRequest(found.job.name, found.job.id!);
    }
    await found.job.remove();
    return { kind: "removed", was: state };
  }
  if (state === "active") {
    const receivers = await requestCancel(redis, prefix, { queue: found.queue.name, jobId: found.job.id! });
    return receivers > 0 ? { kind: "requested", receivers } : { kind: "no-listener" };
  }
  return { kind: "finished", state };
}

/** What the history needs to know of a job. */
export function operationRef(job: Job): OperationRef {
  return { id: job.id ?? "", name: job.name, queue: job.queueName, createdAt: job.timestamp, maxAttempts: job.opts.attempts ?? 1, data: job.data };
}
