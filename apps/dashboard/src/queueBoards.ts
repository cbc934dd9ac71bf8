import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { FastifyAdapter } from "@bull-board/fastify";
import type { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";

/**
 * bull-board twice over the same queues: operators get the writable board at /queues (retry,
 * clean, promote, pause), viewers the read-only one at /queues/readonly (bull-board hides the
 * buttons and its API refuses writes with 405; the auth hook refuses them before that).
 */
export const OPERATOR_BOARD = "/queues";
export const VIEWER_BOARD = "/queues/readonly";

export async function mountQueueBoards(app: FastifyInstance, queues: readonly Queue[]): Promise<void> {
  for (const [basePath, readOnlyMode] of [[OPERATOR_BOARD, false], [VIEWER_BOARD, true]] as const) {
    const serverAdapter = new FastifyAdapter();
    serverAdapter.setBasePath(basePath);
    createBullBoard({
      queues: queues.map((queue) => new BullMQAdapter(queue, { readOnlyMode, allowRetries: !readOnlyMode })),
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
