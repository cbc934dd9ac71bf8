import { createServer } from "node:http";
import type { IncomingHttpHeaders, Server } from "node:http";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { verifyWebhook } from "@fleet/core/webhookSignature";
import { registerCallback } from "@fleet/db/sql/webhooks";
import { createWorkerFixture } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  answered: number;
}

const SECRET = "webhook-secret-for-the-test-0123456789";

describe("completion webhooks from a worker process", () => {
  let fx: WorkerFixture;
  let server: Server;
  let base: string;
  const received: Received[] = [];
  const answeredBefore = new Set<string>();
  // First request to these paths: never answered (the test kills the sender meanwhile).
  const hangFirst = new Set<string>(["/hooks/slow"]);
  const hanging: Array<() => void> = [];
  let onHang: () => void = () => undefined;

  beforeAll(async () => {
    // A receiver that answers 500 to the first request of each delivery and 200 afterwards.
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const delivery = String(req.headers["x-fleet-delivery"]);
        if (hangFirst.delete(req.url ?? "")) {
          received.push({ path: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString("utf8"), answered: 0 });
          answeredBefore.add(delivery);
          hanging.push(() => res.destroy());
          onHang();
          return;
        }
        const first = !answeredBefore.has(delivery);
        answeredBefore.add(delivery);
        const status = first ? 500 : 200;
        received.push({ path: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString("utf8"), answered: status });
        res.writeHead(status, { "content-type": "text/plain" }).end(first ? "busy" : "ok");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    base = `http://127.0.0.1:${port}`;
    const dir = await mkdtemp(join(tmpdir(), "fleet-webhook-secret-"));
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "secret"), `${SECRET}\n`);
    fx = await createWorkerFixture("webhooks", {
      WEBHOOK_ALLOWED_URLS: `${base}/hooks`,
      WEBHOOK_SECRET_FILE: join(dir, "secret"),
      WEBHOOK_JOBS: `recover-stuck=${base}/hooks/by-name`,
      WEBHOOK_BACKOFF: "300ms",
      // A claim older than twice this (+5 s) is a dead sender's: short, for the crash test.
      WEBHOOK_TIMEOUT: "1s",
    });
    await mkdir(fx.sourceDir, { recursive: true });
    await mkdir(fx.destDir, { recursive: true });
  });
  afterAll(async () => {
    for (const end of hanging) end();
    await fx?.close();
    await new Promise((r) => server?.close(r));
  });

  it("POSTs a signed JSON outcome per submission and per job name, retried after a 500 with the same delivery id, each attempt in the history", async () => {
    const worker = fx.spawnWorker("W");
    await worker.started();
    const jobs = fx.runtime.deps.jobs;
    // The API records a callback right after enqueueing; a short delay keeps this test from racing the job.
    const seed = await jobs.enqueue("seed-ranges", {}, { delayMs: 500 });
    await registerCallback(fx.runtime.db, seed.id!, `${base}/hooks/submission?site=7`, "token:site");
    const recover = await jobs.enqueue("recover-stuck", {});

    const delivered = await fx.waitFor(async () => {
      const ok = received.filter((r) => r.answered === 200);
      return ok.length >= 2 ? ok : undefined;
    }, 30_000, "both webhooks to be delivered after their 500");
    expect(delivered.map((r) => r.path).sort()).toEqual(["/hooks/by-name", "/hooks/submission?site=7"]);
    for (const r of received) {
      // Signed over the raw body with the secret read from WEBHOOK_SECRET_FILE.
      expect(verifyWebhook(SECRET, { timestamp: r.headers["x-fleet-timestamp"] as string, signature: r.headers["x-fleet-signature"] as string }, r.body)).toBe(true);
      expect(verifyWebhook("another-secret-entirely", { timestamp: r.headers["x-fleet-timestamp"] as string, signature: r.headers["x-fleet-signature"] as string }, r.body)).toBe(false);
      expect(r.headers["content-type"]).toBe("application/json");
    }
    for (const path of ["/hooks/by-name", "/hooks/submission?site=7"]) {
      const tries = received.filter((r) => r.path === path);
      expect(tries.map((r) => r.answered)).toEqual([500, 200]);
      expect(tries[1]!.headers["x-fleet-delivery"]).toBe(tries[0]!.headers["x-fleet-delivery"]);
      expect(tries[1]!.body).toBe(tries[0]!.body);
    }
    const bodyOf = (path: string) => JSON.parse(received.find((r) => r.path === path)!.body) as { event: string; operation: Record<string, unknown> };
    expect(bodyOf("/hooks/submission?site=7")).toEqual({
      event: "operation.finished",
      operation: expect.objectContaining({ id: seed.id, name: "seed-ranges", queue: "maintenance", state: "completed", attempts: 1, error: null, result: expect.anything() }),
    });
    expect(bodyOf("/hooks/by-name").operation).toMatchObject({ id: recover.id, name: "recover-stuck", state: "completed" });

    const history = await fx.waitFor(async () => {
      const { rows } = await fx.runtime.db.query<{ message: string }>(`SELECT message FROM operation_status WHERE operation_id = $1 AND kind = 'LOG' ORDER BY id`, [seed.id]);
      return rows.length >= 2 ? rows.map((r) => r.message) : undefined;
    }, 10_000, "the attempts in the history");
    expect(history).toEqual([
      expect.stringMatching(new RegExp(`^webhook ${base}/hooks/submission: attempt 1 failed \\(HTTP 500: busy\\); next try in \\d+ s$`)),
      `webhook ${base}/hooks/submission: attempt 2 delivered (HTTP 200)`,
    ]);
    const { rows } = await fx.runtime.db.query<{ url: string; status: string; attempts: number; source: string }>(`SELECT url, status::text AS status, attempts, source FROM webhook_deliveries ORDER BY url`);
    expect(rows).toEqual([
      { url: `${base}/hooks/by-name`, status: "SENT", attempts: 2, source: "job" },
      { url: `${base}/hooks/submission?site=7`, status: "SENT", attempts: 2, source: "submission" },
    ]);
    worker.signal("SIGTERM");
    expect(await worker.exited).toMatchObject({ code: 0 });
  });

  it("a worker killed while it POSTs loses nothing: another worker sends the delivery again, same id, and the history says so", async () => {
    const killer = fx.spawnWorker("K");
    await killer.started();
    const hung = new Promise<void>((resolve) => (onHang = resolve));
    const seed = await fx.runtime.deps.jobs.enqueue("seed-ranges", {}, { delayMs: 500 });
    await registerCallback(fx.runtime.db, seed.id!, `${base}/hooks/slow`, "token:site");
    await hung;
    killer.signal("SIGKILL");
    await killer.exited;
    const rescuer = fx.spawnWorker("R");
    await rescuer.started();

    const tries = await fx.waitFor(async () => {
      const t = received.filter((r) => r.path === "/hooks/slow");
      return t.some((r) => r.answered !== 0) ? t : undefined;
    }, 60_000, "the delivery to be sent again by the other worker");
    expect(tries.map((r) => r.answered)).toEqual([0, 200]);
    expect(tries[1]!.headers["x-fleet-delivery"]).toBe(tries[0]!.headers["x-fleet-delivery"]);
    expect(verifyWebhook(SECRET, { timestamp: tries[1]!.headers["x-fleet-timestamp"] as string, signature: tries[1]!.headers["x-fleet-signature"] as string }, tries[1]!.body)).toBe(true);
    const history = await fx.waitFor(async () => {
      const { rows } = await fx.runtime.db.query<{ message: string }>(`SELECT message FROM operation_status WHERE operation_id = $1 AND kind = 'LOG' ORDER BY id`, [seed.id]);
      return rows.some((r) => r.message.includes("delivered")) ? rows.map((r) => r.message) : undefined;
    }, 10_000, "the history of the delivery");
    expect(history).toEqual([`webhook ${base}/hooks/slow: attempt 1 lost (its sender stopped); trying again`, `webhook ${base}/hooks/slow: attempt 2 delivered (HTTP 200)`]);
    rescuer.signal("SIGTERM");
    expect(await rescuer.exited).toMatchObject({ code: 0 });
  });
});
