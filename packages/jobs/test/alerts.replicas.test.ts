import { createServer } from "node:http";
import type { Server } from "node:http";
import { createPool } from "@fleet/db/pool";
import { z } from "zod";
import { LinkBreakers } from "@fleet/core/linkBreakers";
import { startSmtpServer } from "@fleet/testing/smtpServer";
import type { SmtpTestServer } from "@fleet/testing/smtpServer";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { AlertWatch } from "../src/alerts/alertWatch";
import { alertFields, toAlertSettings } from "../src/alerts/alertSettings";
import { sendNotifications } from "../src/accounts/sendNotifications";
import { createPipelineHarness, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * operator alerts must be raised once per condition (a stable id the receiver can dedupe
 * on) by however many scheduler replicas, across scheduler restarts, and an alert email must not
 * be lost when the scheduler dies (or its database connection drops) mid-check.
 */
describe("operator alerts", () => {
  let h: PipelineHarness;
  let smtp: SmtpTestServer;
  let server: Server;
  let url: string;
  const posts: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        posts.push(JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>);
        res.writeHead(200).end("ok");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}/slack`;
    smtp = await startSmtpServer();
    h = await createPipelineHarness("alerts-replicas", { SMTP_HOST: smtp.host, SMTP_PORT: String(smtp.port), SMTP_FROM: "Fleet <fleet@example.org>", SMTP_TIMEOUT: "3s", BATCH_SIZE: "3" });
    // Ranges left, nobody consuming the migration queue: the no-worker condition holds throughout.
    await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 6 });
    await h.startRunner({ queues: ["maintenance"] });
    const seed = await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await finishedJob(h.runtime, "maintenance", seed.id!);
  });
  afterAll(async () => {
    await h?.close();
    await smtp?.stop();
    await new Promise((r) => server?.close(r));
  });

  const settingsFor = (events: string) =>
    toAlertSettings(z.object(alertFields).parse({ ALERT_WEBHOOK_URL: url, ALERT_EMAIL_TO: "ops@example.org", ALERT_EVENTS: events, ALERT_NO_WORKER_AFTER: "2m", ALERT_WEBHOOK_BACKOFF: "1ms" }));

  const watchAt = (clock: { now: Date }, events: string) =>
    new AlertWatch({
      db: h.runtime.db,
      breakers: new LinkBreakers(h.runtime.redis, h.runtime.prefix),
      workersOnline: () => h.runtime.deps.jobs.queue("migration").getWorkersCount(),
      window: undefined,
      jobs: h.runtime.deps.jobs,
      settings: settingsFor(events),
      log: h.log,
      now: () => clock.now,
    });

  it("one stretch without a worker is alerted once, whether two scheduler replicas watch it or the scheduler restarts", async () => {
    await h.runtime.db.query(`DELETE FROM alerts`);
    posts.length = 0;
    const t0 = Date.now();
    const clock = { now: new Date(t0) };
    // Replica A has watched since t0; replica B (a second scheduler, or A after a restart) since t0 + 1 min.
    const a = watchAt(clock, "no-worker=webhook");
    const b = watchAt(clock, "no-worker=webhook");
    await a.check();
    clock.now = new Date(t0 + 60_000);
    await b.check();
    clock.now = new Date(t0 + 121_000);
    await a.check(); // A: no worker for 2 min → alert
    clock.now = new Date(t0 + 181_000);
    await b.check(); // B: no worker for 2 min by its own count → the same stretch, alerted again?
    // A scheduler restarting later (a deploy) starts counting again too.
    const c = watchAt(clock, "no-worker=webhook");
    await c.check();
    clock.now = new Date(t0 + 302_000);
    await c.check();
    await a.check();
    await b.check();

    const { rows } = await h.runtime.db.query<{ id: string; dedupe_key: string }>(`SELECT id, dedupe_key FROM alerts WHERE event = 'no-worker' ORDER BY id`);
    await waitFor(async () => (posts.length >= rows.length ? true : undefined), 5_000, "the webhooks");
    // The same condition (no worker since before t0, never interrupted): one alert, one POST.
    expect({ alerts: rows.map((r) => r.dedupe_key), posts: posts.map((p) => p.alertId) }).toEqual({ alerts: [expect.any(String)], posts: [Number(rows[0]!.id)] });
  });

  it("an alert email is not lost when the scheduler's check dies after raising the alert and before queueing its email", async () => {
    await h.runtime.db.query(`DELETE FROM alerts`);
    smtp.messages.length = 0;
    const breakers = new LinkBreakers(h.runtime.redis, h.runtime.prefix);
    const link = "local:/src -> local:/dst";
    // The scheduler's own pool (its connection is what dies).
    // Its connection is terminated on purpose below.
    const schedulerDb = createPool({ connectionString: h.env.DATABASE_URL!, max: 1, applicationName: "alert-scheduler", onIdleError: () => undefined });
    const locker = createPool({ connectionString: h.env.DATABASE_URL!, max: 1 });
    const clock = { now: new Date() };
    const watch = new AlertWatch({
      db: schedulerDb,
      breakers,
      workersOnline: async () => 1,
      window: undefined,
      jobs: h.runtime.deps.jobs,
      settings: settingsFor("breaker-opened=email"),
      log: h.log,
      now: () => clock.now,
    });
    try {
      await breakers.open(link, "destination root is gone", "storage-unavailable", "worker-1", 600_000);
      // Hold the outbox so the check stops between its two statements, then cut the scheduler's connection
      // there (a scheduler killed, a failover, a network blip: all the same to the database).
      const lockConn = await locker.connect();
      await lockConn.query("BEGIN");
      await lockConn.query("LOCK TABLE notification IN EXCLUSIVE MODE");
      const checking = watch.check().then(
        () => "ok",
        (err: Error) => `failed: ${err.message}`,
      );
      await waitFor(async () => {
        const { rows } = await h.runtime.db.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'alert-scheduler' AND wait_event_type = 'Lock'`);
        if (rows.length === 0) return undefined;
        await h.runtime.db.query(`SELECT pg_terminate_backend($1)`, [rows[0]!.pid]);
        return true;
      }, 10_000, "the scheduler's insert into the outbox to wait");
      expect(await checking).toMatch(/^failed/);
      await lockConn.query("ROLLBACK");
      lockConn.release();

      // The scheduler comes back (a new process, same state): the breaker is still open.
      const again = new AlertWatch({
        db: h.runtime.db,
        breakers,
        workersOnline: async () => 1,
        window: undefined,
        jobs: h.runtime.deps.jobs,
        settings: settingsFor("breaker-opened=email"),
        log: h.log,
        now: () => clock.now,
      });
      await again.check();
      await again.check();
      // Sent by the harness's notify-send job (woken by the check), or by a round of our own.
      await waitFor(async () => {
        if (smtp.messages.length > 0) return true;
        await sendNotifications({ db: h.runtime.db, services: h.runtime.deps.accounts, log: h.log, signal: new AbortController().signal });
        return smtp.messages.length > 0 || undefined;
      }, 15_000, "the alert email");

      const { rows: alerts } = await h.runtime.db.query<{ channels: string }>(`SELECT channels FROM alerts WHERE event = 'breaker-opened'`);
      expect(alerts).toEqual([{ channels: "email" }]);
      const { rows: queued } = await h.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM notification WHERE template = 'operator-alert'`);
      // The alert says it went by email; the operators must get that email.
      expect({ queued: queued[0]!.n, delivered: smtp.messages.map((m) => m.header("subject")) }).toEqual({
        queued: 1,
        delivered: [expect.stringMatching(/breaker opened/)],
      });
    } finally {
      await breakers.close(link).catch(() => undefined);
      await schedulerDb.end().catch(() => undefined);
      await locker.end().catch(() => undefined);
    }
  });
});
