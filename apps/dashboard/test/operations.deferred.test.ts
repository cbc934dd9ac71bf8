import { BlockList } from "node:net";
import { createServer } from "node:http";
import type { Server } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { Worker } from "bullmq";
import type { Job } from "bullmq";
import { Redis } from "ioredis";
import { createLogger } from "@fleet/core/logger";
import { operationRef } from "@fleet/core/operations";
import { bullPrefix } from "@fleet/core/redis";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { OperationHistory } from "@fleet/db/sql/operations";
import { fireMissedCallbacks } from "@fleet/db/sql/webhooks";
import { testRedisUrl } from "@fleet/testing/testRedis";
import { sendWebhooks } from "@fleet/jobs/webhooks/sendWebhooks";
import { createDashboardFixture, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

async function until(check: () => Promise<boolean> | boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * notify-send keeps a request made while it runs for one more run after it (keep-last). Every
 * requester of that run must hold the id that actually runs: it answers GET before the job
 * exists, runs once, and each requester's callbackUrl fires when it ends. (Before, each request
 * got its own id and only the last one ever existed: the first requester's id answered 404
 * forever and its callback never fired.)
 */
describe("operations API: requests made while a keep-last job runs", () => {
  let fx: DashboardFixture;
  let db: DbPool;
  let server: Server;
  let base: string;
  const received: Array<{ path: string; body: string }> = [];
  const connection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
  let worker: Worker | undefined;
  const runs: Job[] = [];
  let release: (() => void) | undefined;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        received.push({ path: req.url ?? "", body: Buffer.concat(chunks).toString("utf8") });
        res.writeHead(200).end("ok");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    fx = await createDashboardFixture("deferred", { WEBHOOK_ALLOWED_URLS: `${base}/hooks` });
    db = createPool({ connectionString: fx.db.url, max: 2 });
  });
  afterAll(async () => {
    release?.();
    await worker?.close();
    connection.disconnect();
    await db?.end();
    await fx?.close();
    await new Promise((r) => server?.close(r));
  });

  it("two requests during one run get one id, which answers at once, runs once, and fires both callbacks", async () => {
    const auth = { authorization: `Bearer ${fx.apiToken}`, "content-type": "application/json" };
    const submit = (callbackUrl: string) => send(fx.dashboard.url, "/api/operations", { method: "POST", headers: auth, body: JSON.stringify({ name: "notify-send", opts: { callbackUrl } }) });
    const history = new OperationHistory(db);
    // A worker that holds each job until released, recording what the runner would.
    worker = new Worker(
      "maintenance",
      async (job: Job) => {
        runs.push(job);
        await history.started(operationRef(job), 1);
        await new Promise<void>((r) => (release = r));
      },
      { connection, prefix: bullPrefix(fx.prefix), concurrency: 1 },
    );
    const first = await fx.dashboard.jobs.enqueue("notify-send", {});
    await until(() => runs.length === 1, "the first run to start");
    expect(runs[0]!.id).toBe(first.id);

    const a = await submit(`${base}/hooks/a`);
    const b = await submit(`${base}/hooks/b`);
    expect([a.status, b.status]).toEqual([202, 202]);
    const answerA = (await a.json()) as { id: string; state: string; queuedAfter: string };
    const answerB = (await b.json()) as { id: string; state: string; queuedAfter: string };
    expect(answerA).toMatchObject({ state: "deferred", queuedAfter: first.id });
    expect(answerB).toMatchObject({ state: "deferred", queuedAfter: first.id });
    // One id for both: the run that will carry them.
    expect(answerB.id).toBe(answerA.id);

    // Before the job exists, GET answers from the history written at submission.
    const before = await send(fx.dashboard.url, `/api/operations/${answerA.id}`, { headers: { authorization: auth.authorization } });
    expect(before.status).toBe(200);
    expect(await before.json()).toMatchObject({ id: answerA.id, state: "waiting", submittedBy: "token:ci", queuedAfter: first.id });
    // Nor can it be cancelled yet: it says why.
    const cancel = await send(fx.dashboard.url, `/api/operations/${answerA.id}/cancel`, { method: "POST", headers: { authorization: auth.authorization } });
    expect(cancel.status).toBe(409);
    expect(await cancel.json()).toMatchObject({ state: "deferred", queuedAfter: first.id });

    // The first run ends; the kept run starts under the shared id.
    release!();
    await until(() => runs.length === 2, "the kept run to start");
    const kept = runs[1]!;
    expect(kept.id).toBe(answerA.id);
    const during = await send(fx.dashboard.url, `/api/operations/${answerA.id}`, { headers: { authorization: auth.authorization } });
    expect(await during.json()).toMatchObject({ id: answerA.id, state: "active" });
    release!();
    const queue = fx.dashboard.jobs.queue("maintenance");
    await until(async () => (await queue.getJobState(answerA.id)) === "completed", "the kept run to complete");
    await history.finished(operationRef(kept), { state: "COMPLETED", attempts: 1 });
    await sleep(300);
    expect(runs.map((j) => j.id)).toEqual([first.id, answerA.id]);

    // The history row is the job's now, and still says who asked for it.
    const { rows } = await db.query(`SELECT state, submitted_by, queued_after, created_at FROM operations WHERE id = $1`, [answerA.id]);
    expect(rows).toEqual([{ state: "COMPLETED", submitted_by: "token:ci", queued_after: null, created_at: new Date(kept.timestamp) }]);

    // Both callbacks were registered under that id and fire now that it has ended (what
    // webhook-send does each minute: the backstop, then a round of deliveries).
    await fireMissedCallbacks(db);
    const settings = { allowedUrls: [`${base}/hooks`], secret: "s".repeat(32), jobUrls: new Map(), maxAttempts: 3, backoffMs: [100], timeoutMs: 5_000, privateNetworks: new BlockList() };
    await sendWebhooks({ db, settings, log: createLogger({ name: "test", LOG_LEVEL: "error", LOG_FORMAT: "json" } as never), signal: new AbortController().signal });
    const callbacks = await db.query<{ url: string; fired: boolean }>(`SELECT url, fired_at IS NOT NULL AS fired FROM operation_callbacks WHERE operation_id = $1 ORDER BY id`, [answerA.id]);
    expect(callbacks.rows).toEqual([
      { url: `${base}/hooks/a`, fired: true },
      { url: `${base}/hooks/b`, fired: true },
    ]);
    expect(received.map((r) => [r.path, (JSON.parse(r.body) as { operation: { id: string } }).operation.id]).sort()).toEqual([
      ["/hooks/a", answerA.id],
      ["/hooks/b", answerA.id],
    ]);
  });
});
