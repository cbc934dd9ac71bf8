import type { Queue } from "bullmq";
import type { FastifyInstance, FastifyReply } from "fastify";
import { z } from "zod";
import type { ApiLock } from "@fleet/core/apiLock";
import type { ContractLookup } from "@fleet/core/jobDefinition";
import type { JobClient } from "@fleet/core/jobClient";
import type { OperationRecorder } from "@fleet/core/operationRecorder";
import { AmbiguousOperationError, OPERATION_ID, OPERATION_STATES, cancelOperation, describeOperation, findOperation, listOperations, listSiteOperations, operationRef, showOperation, summarizeOperation } from "@fleet/core/operations";
import type { ListCursor, OperationHistoryReader } from "@fleet/core/operations";
import type { Redis } from "ioredis";
import { parseRunAt } from "@fleet/core/runAt";
import { webhookUrlProblem } from "@fleet/core/webhookSignature";
import type { Queryable } from "@fleet/db/pool";
import { registerCallback } from "@fleet/db/sql/webhooks";
import type { FleetJobs } from "@fleet/jobs/contracts";
import { actorOf } from "./auth";
import { siteClientJobId, siteSubmitted, siteViewOf } from "./siteScope";
import { formatScopes, mayActOnJob } from "./tokenScopes";

/**
 * The operations API (JSON, bearer tokens, checked in auth.ts): submit any catalogue job, follow
 * it, list, cancel; and the API lock. An operation is a BullMQ job; its id is the job id, looked
 * up in every catalogue queue, then in the Postgres history (operations BullMQ has pruned).
 */
export interface OperationsApiOptions {
  /** The job contracts (no handler is loaded to submit). */
  catalogue: ContractLookup;
  jobs: JobClient<FleetJobs>;
  queues: readonly Queue[];
  apiLock: ApiLock;
  /** Producer connection and BullMQ prefix, to publish cancel requests to the runners. */
  redis: Redis;
  prefix: string;
  /** The operation history: submissions and cancels are written to it, look-ups fall back to it. */
  history: { recorder: OperationRecorder; reader: OperationHistoryReader };
  /** Completion callbacks: the allow-list, and where a callback is recorded. */
  callbacks: { allowedUrls: readonly string[]; db: Queryable };
}

// A client's id (opts.jobId): no ":" (BullMQ refuses it in custom ids); stored as api-<job>-<id>.
const JOB_ID = z.string().regex(/^[A-Za-z0-9_.@-]{1,150}$/, "1 to 150 letters, digits and _.@-");

const submitBody = z
  .object({
    name: z.string().min(1).max(100),
    data: z.unknown().optional(),
    opts: z
      .object({
        delayMs: z.number().int().min(0).max(366 * 24 * 3_600_000).optional(),
        /** An absolute start: ISO 8601 with an offset, or a local time and an IANA zone (see runAt.ts). */
        runAt: z.string().min(1).max(100).optional(),
        /** POSTed (signed) when the operation ends for good; must be allowed by WEBHOOK_ALLOWED_URLS. */
        callbackUrl: z.string().min(1).max(2000).optional(),
        priority: z.number().int().min(1).max(2_097_152).optional(),
        jobId: JOB_ID.optional(),
      })
      .strict()
      .refine((o) => o.delayMs === undefined || o.runAt === undefined, { message: "give delayMs or runAt, not both", path: ["runAt"] })
      .optional(),
  })
  .strict();

/** A site's listing resumes after `<createdAt ms>:<id>` (the `next` of the page before). */
// Its id part is any operation's id (OPERATION_ID): a site's listing must go past every row it shows.
const LIST_CURSOR = /^(\d{1,15}):([A-Za-z0-9_.:@-]{1,255})$/;

const listQuery = z
  .object({
    state: z.enum(OPERATION_STATES).optional(),
    limit: z.coerce.number().int().min(1).max(500).default(50),
    after: z.string().regex(LIST_CURSOR, "the next of an earlier page").optional(),
    name: z.string().min(1).max(100).optional(),
  })
  .strict();

const lockBody = z.object({ reason: z.string().trim().min(1).max(500) }).strict();

export function operationsApi(app: FastifyInstance, options: OperationsApiOptions): void {
  const { catalogue, jobs, queues, apiLock, history } = options;

  app.post("/api/operations", async (req, reply) => {
    const lock = await apiLock.get();
    if (lock) return reply.code(423).send({ error: "the API is locked", reason: lock.reason, lockedBy: lock.by, lockedAt: lock.at });
    const body = submitBody.safeParse(req.body);
    if (!body.success) return invalid(reply, "invalid request body", body.error);
    const { name, data, opts: given } = body.data;
    const { runAt: runAtText, callbackUrl, ...rest } = given ?? {};
    let opts: { delayMs?: number; priority?: number; jobId?: string } = rest;
    let runAt: Date | undefined;
    if (runAtText !== undefined) {
      const parsed = parseRunAt(runAtText, new Date());
      if (!parsed.ok) return reply.code(400).send({ error: parsed.error, issues: [{ path: "opts.runAt", message: parsed.error }] });
      opts = { ...rest, ...(parsed.delayMs > 0 ? { delayMs: parsed.delayMs } : {}) };
      runAt = parsed.at;
    }
    if (callbackUrl !== undefined) {
      const problem = webhookUrlProblem(callbackUrl, options.callbacks.allowedUrls);
      if (problem) return reply.code(400).send({ error: `callbackUrl refused: ${problem}`, issues: [{ path: "opts.callbackUrl", message: problem }] });
    }
    const def = catalogue.get(name);
    if (!def) return reply.code(400).send({ error: `unknown job "${name}"`, known: catalogue.names() });
    const principal = req.principal;
    const site = siteViewOf(principal);
    if (principal?.kind === "token" && !mayActOnJob(principal.scopes, name)) {
      req.log.warn({ token: principal.user, name }, "token scope refused");
      return reply.code(403).send({ error: `this token may not submit "${name}" (its scopes: ${formatScopes(principal.scopes)})` });
    }
    if (site && def.dedupeKeepLastIfActive) {
      // Its requests made during one run become one shared run (the last one's data, every
      // requester's callback): a site would share it with, and learn of, every other submitter.
      return reply.code(403).send({ error: `"${name}" merges the requests made while it runs into one run shared by every submitter: a site's token (site:${site.site}) may not submit it` });
    }
    const payload = def.schema.safeParse(data);
    if (!payload.success) return invalid(reply, `invalid data for job "${name}"`, payload.error);
    if (opts.jobId !== undefined) {
      // A client's id lives in its own namespace, per job: it makes a submission idempotent but
      // can never take an id Fleet gives its own jobs (range-7, account-step-…) — a token allowed
      // one job could otherwise park a job under another's id, and BullMQ drops the real one.
      if (def.jobId || def.dedupeId) {
        return reply.code(400).send({ error: `job "${name}" derives its own id from its data: leave opts.jobId out`, issues: [{ path: "opts.jobId", message: "not accepted for this job" }] });
      }
      opts = { ...opts, jobId: site ? siteClientJobId(site.site, name, opts.jobId) : clientJobId(name, opts.jobId) };
    }
    // The name is checked against the catalogue just above; the client validates the payload again.
    // What is queued may be another submission's job (a duplicate), or this request may wait for
    // a running job under the id every request of that run shares (JobClient.submit): answered
    // and recorded as it is.
    // Who and for which site go with a durable kind's kept request (a replay records them).
    const submission = await jobs.submit(name as keyof FleetJobs & string, payload.data as never, { ...opts, submittedBy: actorOf(principal) ?? null, site: site?.site ?? null });
    const { job, deduplicated, queuedAfter } = submission;
    // A job that derives its id from its data (unpack of one manifest, the fleet's singletons)
    // can be one another submitter queued: a site's token is told so and shown nothing of it,
    // and its callback is not registered on it.
    if (site && deduplicated && !(await siteSubmitted(site, history.reader, submission.id, job))) {
      return reply.code(409).send({ error: `an identical "${name}" operation (same id, derived from its data) was queued by another submitter: nothing new was queued, and this token cannot see it` });
    }
    if (callbackUrl !== undefined) {
      // After the enqueue, under the id of the job that carries the request. Should the job end
      // before this row exists, webhook-send's backstop queues it from the history.
      try {
        await registerCallback(options.callbacks.db, submission.id, callbackUrl, actorOf(req.principal) ?? null);
      } catch (err) {
        req.log.error({ err, operation: submission.id }, "callback not recorded: withdrawing the submission");
        // Never another submitter's job (a duplicate), nor one that is not there yet. A durable
        // kind's kept request goes with it (see JobClient.withdraw).
        const removed = !deduplicated && !queuedAfter && (await jobs.withdraw(job));
        return reply.code(removed ? 503 : 500).send({ error: removed ? "the callback could not be recorded (database unavailable): nothing was submitted" : `the callback could not be recorded and operation ${submission.id} is queued` });
      }
      if (!queuedAfter && ((await job.isCompleted().catch(() => false)) || (await job.isFailed().catch(() => false)))) await jobs.enqueue("webhook-send", {}).catch(() => undefined);
    }
    req.log.info({ operation: submission.id, name, queue: def.queue, by: actorOf(req.principal), ...(deduplicated ? { deduplicated } : {}), ...(queuedAfter ? { queuedAfter } : {}) }, "operation submitted");
    // The job is in Redis either way: a history that cannot be written now is filled in by the
    // runner. A duplicate leaves the record of the submission that queued the job as it is. A
    // request waiting for a running job has no job yet: its row (WAITING, who submitted it) is
    // what GET answers until the job exists; the job's first event takes it over. Several
    // requests of one run share it, and the first submitter is the one kept.
    const notWritten = (err: unknown) => {
      req.log.warn({ err, operation: submission.id }, "operation history not written");
      return false;
    };
    let written = true;
    if (queuedAfter) {
      const ref = { ...operationRef(job), id: submission.id, createdAt: Date.now(), data: payload.data };
      written = (await history.recorder.deferred?.(ref, queuedAfter, actorOf(req.principal), site?.site).then(() => true, notWritten)) ?? true;
    } else if (!deduplicated) {
      written = await history.recorder.submitted(operationRef(job), opts?.delayMs ? "DELAYED" : "WAITING", actorOf(req.principal), site?.site).then(() => true, notWritten);
    }
    if (site && !written) {
      // Only the history says an operation is the site's: unrecorded, its site could never see
      // or cancel it, so it is withdrawn (a durable kind's kept request first, as a cancel does,
      // and kept again if the job cannot be removed: see JobClient.withdraw).
      const withdrawn = !queuedAfter && (await jobs.withdraw(job).catch(() => false));
      req.log.warn({ operation: submission.id, withdrawn }, "site operation not recorded as the site's");
      return reply.code(withdrawn ? 503 : 500).send({
        error: withdrawn
          ? "the operation could not be recorded as this site's (database unavailable): nothing was submitted"
          : `operation ${submission.id} is queued but could not be recorded as this site's: this token cannot see or cancel it`,
      });
    }
    const extra = { ...(runAt ? { runAt: runAt.toISOString() } : {}), ...(callbackUrl ? { callbackUrl } : {}) };
    if (queuedAfter) return reply.code(202).send({ id: submission.id, name, queue: def.queue, state: "deferred", queuedAfter, ...extra });
    return reply.code(202).send({ ...(await summarizeOperation(job)), ...(deduplicated ? { deduplicated: true } : {}), ...extra });
  });

  app.get("/api/operations", async (req, reply) => {
    const query = listQuery.safeParse(req.query);
    if (!query.success) return invalid(reply, "invalid query", query.error);
    const { state, limit, after, name } = query.data;
    const site = siteViewOf(req.principal);
    if (site) {
      const { operations, next } = await listSiteOperations(queues, history.reader, site.site, { state, name }, limit, after === undefined ? undefined : parseCursor(after));
      return reply.send({ operations, ...(next ? { next: `${next.createdAt}:${next.id}` } : {}) });
    }
    // BullMQ's sets are not in creation order across queues, nor by job: a page by cursor, or of
    // one job, would come back short. Both are a site's listing's (from the history).
    const siteOnly = after !== undefined ? "after" : name !== undefined ? "name" : undefined;
    if (siteOnly) return reply.code(400).send({ error: `${siteOnly} narrows a site's listing; without a site, narrow by state and limit`, issues: [{ path: siteOnly, message: "only for a site's token" }] });
    return reply.send({ operations: await listOperations(queues, state, limit, history.reader) });
  });

  app.get("/api/operations/:id", async (req, reply) => {
    const id = (req.params as { id: string }).id;
    const site = siteViewOf(req.principal);
    if (site) {
      // Answered as for an unknown id whenever the site did not submit it (an id naming jobs
      // in several queues included: which queues hold it is not the site's to know).
      const found = OPERATION_ID.test(id) ? await findOperation(queues, id).catch(notFoundIfAmbiguous) : undefined;
      if (found === AMBIGUOUS || !(OPERATION_ID.test(id) && (await siteSubmitted(site, history.reader, id, found?.job)))) return reply.code(404).send({ error: "no such operation" });
      const operation = found ? await describeOperation(found.job, found.queue) : await history.reader.find(id);
      if (!operation) return reply.code(404).send({ error: "no such operation" });
      return reply.send(operation);
    }
    const operation = await showOperation(queues, history.reader, id).catch(ambiguous(reply));
    if (operation === AMBIGUOUS) return reply;
    if (!operation) return reply.code(404).send({ error: "no such operation" });
    return reply.send(operation);
  });

  app.post("/api/operations/:id/cancel", async (req, reply) => {
    const id = (req.params as { id: string }).id;
    const site = siteViewOf(req.principal);
    const found = await findOperation(queues, id).catch(site ? notFoundIfAmbiguous : ambiguous(reply));
    if (found === AMBIGUOUS) return site ? reply.code(404).send({ error: "no such operation" }) : reply;
    // Before anything that tells what the operation is (its state, its job): another site's is unknown here.
    if (site && !(OPERATION_ID.test(id) && (await siteSubmitted(site, history.reader, id, found?.job)))) return reply.code(404).send({ error: "no such operation" });
    if (!found) {
      const past = OPERATION_ID.test(id) ? await history.reader.find(id) : undefined;
      if (!past) return reply.code(404).send({ error: "no such operation" });
      // A deferred request: its job is created when the one it waits for ends.
      const waitsFor = (past as { queuedAfter?: string }).queuedAfter;
      if (waitsFor) return reply.code(409).send({ error: `the operation has not been queued yet: it is created once operation ${waitsFor} has ended; cancel it then`, state: "deferred", queuedAfter: waitsFor });
      return reply.code(409).send({ error: `the operation has already ended (${past.state})`, state: past.state });
    }
    const principal = req.principal;
    if (principal?.kind === "token" && !mayActOnJob(principal.scopes, found.job.name)) {
      return reply.code(403).send({ error: `this token may not cancel "${found.job.name}" operations (its scopes: ${formatScopes(principal.scopes)})` });
    }
    const outcome = await cancelOperation(options.redis, options.prefix, found, catalogue.get(found.job.name), jobs);
    if (outcome.kind === "removed") {
      await history.recorder.removed(operationRef(found.job), actorOf(req.principal)).catch((err: unknown) => req.log.warn({ err, operation: id }, "operation history not written"));
    }
    req.log.warn({ operation: id, outcome, by: actorOf(req.principal) }, "operation cancel");
    switch (outcome.kind) {
      case "removed":
        return reply.send({ id, cancelled: true, was: outcome.was });
      case "requested":
        return reply.code(202).send({ id, cancelRequested: true, was: "active" });
      case "refused":
        return reply.code(409).send({ error: `not cancelled: ${outcome.reason}`, state: await found.job.getState() });
      case "no-listener":
        return reply.code(409).send({ error: "the operation is running but no worker is listening for cancel requests", state: "active" });
      case "finished":
        return reply.code(409).send({ error: `the operation has already ${outcome.state === "completed" ? "completed" : "failed"}`, state: outcome.state });
    }
  });

  app.get("/api/lock", async (_req, reply) => reply.send({ locked: (await apiLock.get()) ?? false }));
  app.post("/api/lock", async (req, reply) => {
    const body = lockBody.safeParse(req.body);
    if (!body.success) return invalid(reply, "expected {\"reason\": \"…\"}", body.error);
    const state = await apiLock.lock(body.data.reason, actorOf(req.principal) ?? "unknown");
    req.log.warn({ by: state.by, reason: state.reason }, "API locked");
    return reply.send({ locked: state });
  });
  app.delete("/api/lock", async (req, reply) => {
    const removed = await apiLock.unlock();
    if (removed) req.log.warn({ by: actorOf(req.principal) }, "API unlocked");
    return reply.send({ locked: false, removed });
  });
}

function invalid(reply: FastifyReply, error: string, zodError: z.ZodError): FastifyReply {
  return reply.code(400).send({ error, issues: zodError.issues.map((i) => ({ path: i.path.join("."), message: i.message })) });
}

function parseCursor(text: string): ListCursor {
  const [, createdAt, id] = LIST_CURSOR.exec(text)!;
  return { createdAt: Number(createdAt), id: id! };
}

/** Where a client's opts.jobId goes: `api-<job>-<id>`, never one of Fleet's own ids. */
export function clientJobId(name: string, id: string): string {
  return `api-${name}-${id}`;
}

const AMBIGUOUS = Symbol("ambiguous");

/** For a site's token: an ambiguous id is answered like an unknown one (see the routes). */
function notFoundIfAmbiguous(err: unknown): typeof AMBIGUOUS {
  if (!(err instanceof AmbiguousOperationError)) throw err;
  return AMBIGUOUS;
}

/** An id that names jobs in several queues (AmbiguousOperationError): 409 naming them. */
function ambiguous(reply: FastifyReply): (err: unknown) => typeof AMBIGUOUS {
  return (err: unknown) => {
    if (!(err instanceof AmbiguousOperationError)) throw err;
    void reply.code(409).send({ error: err.message, queues: err.queues });
    return AMBIGUOUS;
  };
}
