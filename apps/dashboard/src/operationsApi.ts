import type { Job, Queue } from "bullmq";
import type { FastifyInstance, FastifyReply } from "fastify";
import { z } from "zod";
import type { ApiLock } from "@fleet/core/apiLock";
import type { Catalogue } from "@fleet/core/catalogue";
import type { JobClient } from "@fleet/core/jobClient";
import { requestCancel } from "@fleet/core/jobCancel";
import type { Redis } from "ioredis";
import type { FleetJobs } from "@fleet/jobs/catalogue";

/**
 * The operations API (JSON, bearer tokens, checked in auth.ts): submit any catalogue job, follow
 * it, list, cancel; and the API lock. An operation is a BullMQ job; its id is the job id, looked
 * up in every catalogue queue.
 */
export interface OperationsApiOptions {
  catalogue: Catalogue<FleetJobs>;
  jobs: JobClient<FleetJobs>;
  queues: readonly Queue[];
  apiLock: ApiLock;
  /** Producer connection and BullMQ prefix, to publish cancel requests to the runners. */
  redis: Redis;
  prefix: string;
}

const JOB_ID = z.string().min(1).max(200).regex(/^[A-Za-z0-9_.:@-]+$/, "letters, digits and _.:@- only");

const submitBody = z
  .object({
    name: z.string().min(1).max(100),
    data: z.unknown().optional(),
    opts: z
      .object({
        delayMs: z.number().int().min(0).max(366 * 24 * 3_600_000).optional(),
        priority: z.number().int().min(1).max(2_097_152).optional(),
        jobId: JOB_ID.optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

const STATES = ["waiting", "active", "delayed", "prioritized", "waiting-children", "completed", "failed"] as const;
const listQuery = z
  .object({
    state: z.enum(STATES).optional(),
    limit: z.coerce.number().int().min(1).max(500).default(50),
  })
  .strict();

const lockBody = z.object({ reason: z.string().trim().min(1).max(500) }).strict();

export function operationsApi(app: FastifyInstance, options: OperationsApiOptions): void {
  const { catalogue, jobs, queues, apiLock } = options;

  app.post("/api/operations", async (req, reply) => {
    const lock = await apiLock.get();
    if (lock) return reply.code(423).send({ error: "the API is locked", reason: lock.reason, lockedBy: lock.by, lockedAt: lock.at });
    const body = submitBody.safeParse(req.body);
    if (!body.success) return invalid(reply, "invalid request body", body.error);
    const { name, data, opts } = body.data;
    const def = catalogue.get(name);
    if (!def) return reply.code(400).send({ error: `unknown job "${name}"`, known: catalogue.names() });
    const payload = def.schema.safeParse(data);
    if (!payload.success) return invalid(reply, `invalid data for job "${name}"`, payload.error);
    // The name is checked against the catalogue just above; the client validates the payload again.
    const job = await jobs.enqueue(name as keyof FleetJobs & string, payload.data as never, opts ?? {});
    req.log.info({ operation: job.id, name, queue: def.queue, by: req.principal?.user }, "operation submitted");
    return reply.code(202).send(await describe(job, def.queue, false));
  });

  app.get("/api/operations", async (req, reply) => {
    const query = listQuery.safeParse(req.query);
    if (!query.success) return invalid(reply, "invalid query", query.error);
    const { state, limit } = query.data;
    const types = state ? [state] : [...STATES];
    const found = (await Promise.all(queues.map((q) => q.getJobs(types, 0, limit - 1)))).flat();
    found.sort((a, b) => b.timestamp - a.timestamp);
    const operations = await Promise.all(found.slice(0, limit).map((job) => describe(job, job.queueName, false)));
    return reply.send({ operations });
  });

  app.get("/api/operations/:id", async (req, reply) => {
    const found = await findJob(queues, (req.params as { id: string }).id);
    if (!found) return reply.code(404).send({ error: "no such operation" });
    return reply.send(await describe(found.job, found.queue.name, true, found.queue));
  });

  app.post("/api/operations/:id/cancel", async (req, reply) => {
    const found = await findJob(queues, (req.params as { id: string }).id);
    if (!found) return reply.code(404).send({ error: "no such operation" });
    const state = await found.job.getState();
    if (state === "waiting" || state === "delayed" || state === "prioritized" || state === "waiting-children") {
      await found.job.remove();
      req.log.info({ operation: found.job.id, state, by: req.principal?.user }, "operation cancelled before it ran");
      return reply.send({ id: found.job.id, cancelled: true, was: state });
    }
    if (state === "active") {
      // Only the worker running it can abort it: every runner hears the request, the one holding
      // the job aborts its signal, and the job fails without retry ("cancelled").
      const receivers = await requestCancel(options.redis, options.prefix, { queue: found.queue.name, jobId: found.job.id! });
      req.log.warn({ operation: found.job.id, receivers, by: req.principal?.user }, "cancel of a running operation requested");
      if (receivers === 0) return reply.code(409).send({ error: "the operation is running but no worker is listening for cancel requests", state });
      return reply.code(202).send({ id: found.job.id, cancelRequested: true, was: state });
    }
    return reply.code(409).send({ error: `the operation has already ${state === "completed" ? "completed" : "failed"}`, state });
  });

  app.get("/api/lock", async (_req, reply) => reply.send({ locked: (await apiLock.get()) ?? false }));
  app.post("/api/lock", async (req, reply) => {
    const body = lockBody.safeParse(req.body);
    if (!body.success) return invalid(reply, "expected {\"reason\": \"…\"}", body.error);
    const state = await apiLock.lock(body.data.reason, req.principal?.user ?? "unknown");
    req.log.warn({ by: state.by, reason: state.reason }, "API locked");
    return reply.send({ locked: state });
  });
  app.delete("/api/lock", async (req, reply) => {
    const removed = await apiLock.unlock();
    if (removed) req.log.warn({ by: req.principal?.user }, "API unlocked");
    return reply.send({ locked: false, removed });
  });
}

async function findJob(queues: readonly Queue[], id: string): Promise<{ job: Job; queue: Queue } | undefined> {
  if (!JOB_ID.safeParse(id).success) return undefined;
  for (const queue of queues) {
    const job = await queue.getJob(id);
    if (job) return { job, queue };
  }
  return undefined;
}

async function describe(job: Job, queueName: string, detail: boolean, queue?: Queue): Promise<Record<string, unknown>> {
  const base = {
    id: job.id,
    name: job.name,
    queue: queueName,
    state: await job.getState(),
    progress: job.progress,
    attempts: job.attemptsMade,
    maxAttempts: job.opts.attempts ?? 1,
    createdAt: new Date(job.timestamp).toISOString(),
    startedAt: job.processedOn ? new Date(job.processedOn).toISOString() : null,
    finishedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
    error: job.failedReason || null,
  };
  if (!detail) return base;
  const logs = queue && job.id ? await queue.getJobLogs(job.id, 0, 199) : { logs: [], count: 0 };
  return { ...base, data: job.data, result: job.returnvalue ?? null, log: logs.logs, logCount: logs.count };
}

function invalid(reply: FastifyReply, error: string, zodError: z.ZodError): FastifyReply {
  return reply.code(400).send({ error, issues: zodError.issues.map((i) => ({ path: i.path.join("."), message: i.message })) });
}
