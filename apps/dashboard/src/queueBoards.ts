import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { FastifyAdapter } from "@bull-board/fastify";
import type { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";
import { summarizeForHistory } from "@fleet/core/operationRecorder";
import { isJob } from "@fleet/core/operations";
import { deny } from "./auth";
import { boardFontRoutes, withLocalFonts } from "./boardFonts";

/**
 * bull-board twice over the same queues: operators get the writable board at /queues (retry,
 * clean, promote, pause), viewers the read-only one at /queues/readonly (bull-board hides the
 * buttons and its API refuses writes with 405; the auth hook refuses them before that).
 */
export const OPERATOR_BOARD = "/queues";
export const VIEWER_BOARD = "/queues/readonly";

/**
 * The board's writes that would create or rewrite jobs and schedules outside the catalogue:
 * no payload validation, no API lock, no operation history. They are refused; jobs are
 * submitted through the operations API (`fleet ops submit`), which has all three. The board's
 * other writes (retry, promote, clean, pause…) act on existing jobs and stay, logged with the
 * user by the request log.
 */
const REFUSED_WRITES = new Set([
  "POST /queues/api/queues/:queueName/add",
  "PATCH /queues/api/queues/:queueName/:jobId/update-data",
  "PATCH /queues/api/queues/:queueName/job-schedulers/:schedulerId",
  "PUT /queues/api/queues/:queueName/job-schedulers/:schedulerId/remove",
]);

/**
 * bull-board's pages: its scripts and styles are files of its own; inline styles are used by
 * the React app; data: images for icons; fonts from /fonts (see boardFonts.ts).
 */
export const BOARD_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'";

/** The most jobs one page of a board lists (bull-board's own settings offer up to 300). */
export const MAX_JOBS_PER_PAGE = 300;

export async function mountQueueBoards(app: FastifyInstance, queues: readonly Queue[]): Promise<void> {
  const byName = new Map(queues.map((q) => [q.name, q]));
  app.addHook("preHandler", async (req, reply) => {
    // By route, not req.url: the router decodes what the raw URL may percent-encode
    // (`/%71ueues/…` is /queues; found by review: it skipped these checks and the CSP).
    if (!(req.routeOptions.url ?? "").startsWith(OPERATOR_BOARD)) return;
    // bull-board takes any page size (found by a security review: one viewer's request for
    // 100,000,000 jobs per page built a 36 MB answer in 93 s, the event loop blocked throughout).
    // Its own settings go up to 300.
    const perPage = (req.query as Record<string, unknown> | undefined)?.jobsPerPage;
    if (perPage !== undefined && !(Number(perPage) >= 1 && Number(perPage) <= MAX_JOBS_PER_PAGE)) {
      return deny(reply, 400, `jobsPerPage must be between 1 and ${MAX_JOBS_PER_PAGE}`);
    }
    // A queue's own Redis keys (id, meta, de:…, <job>:logs…) read as jobs: bull-board answered
    // 500 with Redis's error (WRONGTYPE). Looked up as findOperation does.
    const params = req.params as Record<string, unknown> | undefined;
    const queue = typeof params?.queueName === "string" ? byName.get(params.queueName) : undefined;
    if (queue && typeof params?.jobId === "string") {
      const job = await queue.getJob(params.jobId).catch((err: unknown) => {
        if (String((err as Error)?.message ?? err).startsWith("WRONGTYPE")) return null;
        throw err;
      });
      if (job === null || (job !== undefined && !isJob(job))) return deny(reply, 404, "no such job");
    }
    if (REFUSED_WRITES.has(`${req.method} ${req.routeOptions.url ?? ""}`)) {
      req.log.warn({ user: req.principal?.user, route: req.routeOptions.url }, "board write refused");
      return deny(reply, 403, "jobs are submitted through the operations API (POST /api/operations or fleet ops submit), which validates them, honours the API lock and records who; not from the board");
    }
  });
  app.addHook("onSend", async (req, reply, payload) => {
    if (!(req.routeOptions.url ?? "").startsWith(OPERATOR_BOARD)) return payload;
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
