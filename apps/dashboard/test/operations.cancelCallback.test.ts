import { BlockList } from "node:net";
import { createServer } from "node:http";
import type { Server } from "node:http";
import { createPool } from "@fleet/db/pool";
import { fireMissedCallbacks } from "@fleet/db/sql/webhooks";
import { createLogger } from "@fleet/core/logger";
import { sendWebhooks } from "@fleet/jobs/webhooks/sendWebhooks";
import { createDashboardFixture, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

/**
 * README "Completion webhooks": "when an operation ends for good (completed, or failed
 * with no retry left, cancelled included), Fleet POSTs its outcome" to the submission's
 * callbackUrl. An operation submitted with a callback and cancelled before it started has
 * ended for good; its submitter must hear so.
 */
describe("callbackUrl of a cancelled operation", () => {
  let fx: DashboardFixture;
  let server: Server;
  let base: string;
  const received: string[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        received.push(Buffer.concat(chunks).toString("utf8"));
        res.writeHead(200).end("ok");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    fx = await createDashboardFixture("rv-fixture", { WEBHOOK_ALLOWED_URLS: `${base}/hooks` });
  });
  afterAll(async () => {
    await fx?.close();
    await new Promise((r) => server?.close(r));
  });

  it("a submission cancelled before it started still gets its completion webhook", async () => {
    const auth = { authorization: `Bearer ${fx.apiToken}`, "content-type": "application/json" };
    const res = await send(fx.dashboard.url, "/api/operations", { method: "POST", headers: auth, body: JSON.stringify({ name: "seed-ranges", opts: { callbackUrl: `${base}/hooks/run`, delayMs: 600_000 } }) });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const cancel = await send(fx.dashboard.url, `/api/operations/${id}/cancel`, { method: "POST", headers: { authorization: auth.authorization } });
    expect(cancel.status).toBe(200);
    expect(await cancel.json()).toMatchObject({ cancelled: true });

    // What webhook-send does each minute: the backstop, then a round of deliveries.
    const db = createPool({ connectionString: fx.db.url });
    try {
      await fireMissedCallbacks(db);
      const settings = { allowedUrls: [`${base}/hooks`], secret: "s".repeat(32), jobUrls: new Map(), maxAttempts: 3, backoffMs: [100], timeoutMs: 5_000, privateNetworks: new BlockList() };
      await sendWebhooks({ db, settings, log: createLogger({ name: "test", LOG_LEVEL: "error", LOG_FORMAT: "json" } as never), signal: new AbortController().signal });
      const { rows } = await db.query<{ fired_at: Date | null }>(`SELECT fired_at FROM operation_callbacks WHERE operation_id = $1`, [id]);
      // The operation is over (its history says REMOVED); the callback must not wait forever.
      expect({ callbackFired: rows[0]?.fired_at != null, posts: received.length }).toEqual({ callbackFired: true, posts: 1 });
    } finally {
      await db.end();
    }
  });
});
