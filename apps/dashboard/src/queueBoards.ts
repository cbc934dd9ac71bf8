import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { FastifyAdapter } from "@bull-board/fastify";
import type { Job, Queue } from "bullmq";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { summarizeForHistory } from "@fleet/core/operationRecorder";
import { isJob } from "@fleet/core/operations";
import { deny } from "./auth";
import { RequestsNotForgotten, RequestsNotKept, prepareBoardWrite, recordBoardWrite, settleBoardWrite } from "./boardAudit";
import type { BoardRecords, PendingWrite } from "./boardAudit";
import { boardFontRoutes, withLocalFonts } from "./boardFonts";

/**
 * bull-board twice over the same queues: operators get the writable board at /queues (retry,
 * clean, promote, pause), viewers the read-only one at /queues/readonly (bull-board hides the
 * buttons and its API refuses writes with 405; the auth hook refuses them before that), without
 * the Redis server's details and worker connections (HIDDEN_FROM_VIEWERS).
 */
export const OPERATOR_BOARD = "/queues";
export const VIEWER_BOARD = "/queues/readonly";

/**
 * The board's writes operators may use: retry, promote and clean jobs, pause and resume queues
 * — acting on jobs that exist, logged with the user by the request log and, once done,
 * recorded with the user in PostgreSQL (boardAudit.ts). Every other write of
 * bull-board is refused: adding jobs or editing their data, delay or priority, job schedulers
 * (no payload validation, no API lock, no operation history: jobs are submitted through the
 * operations API, which has all three), and the queue-wide ones the fleet's settings own or
 * that destroy unrecorded (concurrency, rate limits, empty, obliterate, metrics purge). An
 * allow-list, so that a write a new bull-board adds is refused until it is looked at (found by a
 * security review: empty and obliterate were reachable).
 */
const ALLOWED_WRITES = new Set([
  "PUT /api/queues/pause",
  "PUT /api/queues/resume",
  "PUT /api/queues/:queueName/pause",
  "PUT /api/queues/:queueName/resume",
  "PUT /api/queues/:queueName/promote",
  "PUT /api/queues/:queueName/retry/:queueStatus",
  "PUT /api/queues/:queueName/clean/:queueStatus",
  "PUT /api/queues/:queueName/:jobId/retry",
  "PUT /api/queues/:queueName/:jobId/promote",
  "PUT /api/queues/:queueName/:jobId/clean",
]);

/** The statuses a retry or clean by status may name (BullMQ's job states). */
const JOB_STATUSES = new Set(["completed", "failed", "delayed", "wait", "waiting", "active", "paused", "prioritized", "waiting-children"]);

/**
 * What the read-only board does not show: the Redis server's INFO (version, OS, port, uptime,
 * memory, connected and blocked clients) and each queue's worker connections from `CLIENT
 * LIST` (connection ids and the host:port of every worker as Redis sees it). Viewers see
 * queues and jobs; how Redis and the fleet's hosts are laid out is the operators' (found by a
 * security review: bull-board showed viewers the Redis card). bull-board is told so
 * (`hideRedisDetails`, `showWorkers`), and these routes are refused here as well, so that a
 * bull-board upgrade that drops or renames a flag does not bring them back.
 */
const HIDDEN_FROM_VIEWERS = new Set([`GET ${VIEWER_BOARD}/api/redis/stats`, `GET ${VIEWER_BOARD}/api/queues/:queueName/workers`]);

/** Writes that add or rewrite jobs: refused with where to submit instead. */
const SUBMISSION_WRITES = new Set(["POST /api/queues/:queueName/add", "PATCH /api/queues/:queueName/:jobId/update-data"]);

/**
 * bull-board's pages: its scripts and styles are files of its own; inline styles are used by
 * the React app; data: images for icons; fonts from /fonts (see boardFonts.ts).
 */
export const BOARD_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'";

/** The most jobs one page of a board lists (bull-board's own settings offer up to 300). */
export const MAX_JOBS_PER_PAGE = 300;

export async function mountQueueBoards(app: FastifyInstance, queues: readonly Queue[], records: BoardRecords): Promise<void> {
  const byName = new Map(queues.map((q) => [q.name, q]));
  // Allowed writes on their way through bull-board, to be recorded once they succeeded.
  const pending = new WeakMap<FastifyRequest, PendingWrite>();
  app.addHook("preHandler", async (req, reply) => {
    // By route, not req.url: the router decodes what the raw URL may percent-encode
    // (`/%71ueues/…` is /queues; found by review: it skipped these checks and the CSP).
    if (!(req.routeOptions.url ?? "").startsWith(OPERATOR_BOARD)) return;
    // bull-board takes any page size (found by a security review: one viewer's request for
    // 100,000,000 jobs per page built a 36 MB answer in 93 s, the event loop blocked throughout).
    // Its own settings go up to 300.
    if (HIDDEN_FROM_VIEWERS.has(`${req.method === "HEAD" ? "GET" : req.method} ${req.routeOptions.url}`)) {
      return deny(reply, 403, "the read-only board does not show Redis server details or worker connections");
    }
    const perPage = (req.query as Record<string, unknown> | undefined)?.jobsPerPage;
    if (perPage !== undefined && !(Number(perPage) >= 1 && Number(perPage) <= MAX_JOBS_PER_PAGE)) {
      return deny(reply, 400, `jobsPerPage must be between 1 and ${MAX_JOBS_PER_PAGE}`);
    }
    // A queue's own Redis keys (id, meta, de:…, <job>:logs…) read as jobs: bull-board answered
    // 500 with Redis's error (WRONGTYPE). Looked up as findOperation does.
    const params = req.params as Record<string, unknown> | undefined;
    const queue = typeof params?.queueName === "string" ? byName.get(params.queueName) : undefined;
    let job: Job | undefined;
    if (queue && typeof params?.jobId === "string") {
      const found = await queue.getJob(params.jobId).catch((err: unknown) => {
        if (String((err as Error)?.message ?? err).startsWith("WRONGTYPE")) return null;
        throw err;
      });
      if (found === null || (found !== undefined && !isJob(found))) return deny(reply, 404, "no such job");
      job = found;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      const route = req.routeOptions.url ?? "";
      const write = `${req.method} ${route.slice(route.startsWith(VIEWER_BOARD) ? VIEWER_BOARD.length : OPERATOR_BOARD.length)}`;
      if (!ALLOWED_WRITES.has(write)) {
        req.log.warn({ user: req.principal?.user, route }, "board write refused");
        return deny(
          reply,
          403,
          SUBMISSION_WRITES.has(write)
            ? "jobs are submitted through the operations API (POST /api/operations or fleet ops submit), which validates them, honours the API lock and records who; not from the board"
            : "the board retries, promotes and cleans jobs and pauses queues; other writes are not allowed here (concurrency: WORKER_CONCURRENCY with fleet settings; cancelling jobs: fleet ops cancel)",
        );
      }
      // A status BullMQ does not have cleans or retries nothing (200), and would be recorded as
      // done with the URL's text in its message (found by review: newlines included).
      if (typeof params?.queueStatus === "string" && !JOB_STATUSES.has(params.queueStatus)) {
        return deny(reply, 400, `unknown job status (one of ${[...JOB_STATUSES].join(", ")})`);
      }
      // What the record needs and bull-board may take away (a cleaned job, the count it cleaned).
      // A clean's kept requests are forgotten first: one that cannot be refuses the clean.
      // A retry's durable jobs get their requests kept first: one that cannot refuses the retry.
      const prepared = await prepareBoardWrite(req, write, queue, job, records).catch((err: unknown) => {
        if (!(err instanceof RequestsNotForgotten) && !(err instanceof RequestsNotKept)) throw err;
        req.log.warn({ err, route }, err instanceof RequestsNotKept ? "board retry refused: the requests of its durable jobs could not be kept" : "board clean refused: the kept requests of its jobs could not be forgotten");
        return err as RequestsNotForgotten | RequestsNotKept;
      });
      if (prepared instanceof RequestsNotKept) return deny(reply, 503, "the durable jobs' requests could not be kept in the database (database or Redis unavailable): nothing was retried; try again");
      if (prepared instanceof RequestsNotForgotten) return deny(reply, 503, "the jobs' kept requests could not be forgotten (database or Redis unavailable): nothing was removed; try again");
      pending.set(req, prepared);
    }
  });
  app.addHook("onSend", async (req, reply, payload) => {
    if (!(req.routeOptions.url ?? "").startsWith(OPERATOR_BOARD)) return payload;
    // Before the answer leaves: the operator who sees the change can find its record. A failed
    // write (4xx, 5xx) changed nothing and is not recorded as done.
    const write = pending.get(req);
    // A clean's requests taken out before it: those whose job stayed go back, failed or not.
    if (write) await settleBoardWrite(req, write, records);
    if (write && reply.statusCode >= 200 && reply.statusCode < 300) await recordBoardWrite(req, reply.statusCode, payload, write, records);
    void reply.header("content-security-policy", BOARD_CSP);
    const type = String(reply.getHeader("content-type") ?? "");
    return type.startsWith("text/html") && typeof payload === "string" ? withLocalFonts(payload) : payload;
  });
  boardFontRoutes(app);

  for (const [basePath, readOnlyMode] of [[OPERATOR_BOARD, false], [VIEWER_BOARD, true]] as const) {
    const serverAdapter = new FastifyAdapter();
    serverAdapter.setBasePath(basePath);
    createBullBoard({
      queues: queues.map((queue) => {
        const adapter = new BullMQAdapter(queue, { readOnlyMode, allowRetries: !readOnlyMode });
        // Viewers see payloads and results as the operation history keeps them: secrets redacted.
        if (readOnlyMode) {
          adapter.setFormatter("data", (data: unknown) => summarizeForHistory(data));
          adapter.setFormatter("returnValue", (value: unknown) => summarizeForHistory(value));
        }
        return adapter;
      }),
      serverAdapter,
      options: {
        uiConfig: {
          boardTitle: "Fleet",
          hideRedisDetails: readOnlyMode,
          showWorkers: !readOnlyMode,
          miscLinks: [
            { text: "Progress", url: "/progress" },
            { text: "Sign out", url: "/logout" },
          ],
        },
      },
    });
    await app.register(serverAdapter.registerPlugin(), { prefix: basePath });
  }
}
