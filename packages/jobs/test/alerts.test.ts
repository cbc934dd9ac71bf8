import { createServer } from "node:http";
import type { Server } from "node:http";
import { z } from "zod";
import { LinkBreakers } from "@fleet/core/linkBreakers";
import { parseRunWindows } from "@fleet/core/runWindow";
import { raiseAlert } from "@fleet/db/sql/alerts";
import { startSmtpServer } from "@fleet/testing/smtpServer";
import type { SmtpTestServer } from "@fleet/testing/smtpServer";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { AlertWatch } from "../src/alerts/alertWatch";
import { alertFields, toAlertSettings } from "../src/alerts/alertSettings";
import { sendNotifications } from "../src/accounts/sendNotifications";
import { createPipelineHarness, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/** Alerts raised from real state (Redis breakers, PostgreSQL ranges and outcomes, BullMQ workers), captured by a local webhook receiver and SMTP server. */
describe("operator alerts", () => {
  let h: PipelineHarness;
  let smtp: SmtpTestServer;
  let server: Server;
  let url: string;
  const posts: Array<Record<string, unknown>> = [];
  let failNext = 0;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        if (failNext > 0) {
          failNext--;
          res.writeHead(500).end("down");
          return;
        }
        posts.push(JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>);
        res.writeHead(200).end("ok");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}/slack`;
    smtp = await startSmtpServer();
    h = await createPipelineHarness("alerts", { SMTP_HOST: smtp.host, SMTP_PORT: String(smtp.port), SMTP_FROM: "Fleet <fleet@example.org>", SMTP_TIMEOUT: "3s", BATCH_SIZE: "3" });
  });
  afterAll(async () => {
    await h?.close();
    await smtp?.stop();
    await new Promise((r) => server?.close(r));
  });

  it("breaker opened/closed, window closing with work left, no worker, run finished with counts, failures over a threshold: once each, on their channels", async () => {
    const settings = toAlertSettings(
      z.object(alertFields).parse({
        ALERT_WEBHOOK_URL: url,
        ALERT_EMAIL_TO: "ops@example.org",
        ALERT_EVENTS: "breaker-opened=webhook+email,breaker-closed=webhook,run-finished=webhook+email,failures=webhook,window-closing=webhook,no-worker=webhook+email",
        ALERT_FAILURE_THRESHOLD: "not-found=1,*=100",
        ALERT_NO_WORKER_AFTER: "0ms",
        ALERT_WEBHOOK_BACKOFF: "1ms",
      }),
    );
    const { runtime } = h;
    const breakers = new LinkBreakers(runtime.redis, runtime.prefix);
    // 09:50 UTC today, in a window that closes at 10:00: within the 15-minute lead.
    const now = new Date();
    now.setUTCHours(9, 50, 0, 0);
    const watch = new AlertWatch({
      db: runtime.db,
      breakers,
      workersOnline: () => runtime.deps.jobs.queue("migration").getWorkersCount(),
      window: parseRunWindows("daily 09:00-10:00", "UTC"),
      jobs: runtime.deps.jobs,
      settings,
      log: h.log,
      now: () => now,
    });

    // Six files, two missing at the source (not-found); ranges seeded, nobody migrating yet.
    await seedSourceFiles(runtime.db, h.sourceDir, { count: 6, missing: new Set([4, 5]) });
    await h.startRunner({ queues: ["maintenance"] });
    const seed = await runtime.deps.jobs.enqueue("seed-ranges", {});
    await finishedJob(runtime, "maintenance", seed.id!);
    // The reason as a worker records it (linkGuard): its category first.
    await breakers.open("local:/src -> local:/dst", "storage-unavailable: destination root is gone", "storage-unavailable", "worker-1", 60_000);
    failNext = 1; // the first webhook POST meets a 500 and is retried at the next check

    const first = await watch.check();
    expect(first.map((k) => k.split(":")[0]).sort()).toEqual(["breaker-opened", "no-worker", "window-closing"]);
    expect(await watch.check()).toEqual([]); // deduplicated: nothing new, the failed webhook retried
    await waitFor(async () => (posts.length >= 3 ? true : (await watch.check(), undefined)), 10_000, "the three webhooks");
    expect(posts.map((p) => p.event).sort()).toEqual(["breaker-opened", "no-worker", "window-closing"]);
    for (const p of posts) expect(p.text).toMatch(/^Fleet alert: /);
    expect(posts.find((p) => p.event === "breaker-opened")).toMatchObject({ text: "Fleet alert: link local:/src -> local:/dst: breaker opened (storage-unavailable: destination root is gone)", details: { link: "local:/src -> local:/dst", category: "storage-unavailable" } });
    expect(posts.find((p) => p.event === "window-closing")!.summary).toMatch(/closes at .*T10:00:00\.000Z with 2 ranges left$/);

    // The link comes back and a worker migrates everything: 4 files copied, 2 not found.
    await breakers.close("local:/src -> local:/dst");
    await h.startRunner({ queues: ["migration"] });
    await waitFor(async () => {
      const { rows } = await runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_ranges WHERE status <> 'COMPLETE'`);
      return rows[0]!.n === 0 || undefined;
    }, 30_000, "every range complete");
    posts.length = 0;
    const second = await watch.check();
    expect(second.map((k) => k.split(":")[0]).sort()).toEqual(["breaker-closed", "failures", "run-finished"]);
    await waitFor(async () => (posts.length >= 3 ? true : (await watch.check(), undefined)), 10_000, "the next three webhooks");
    expect(posts.find((p) => p.event === "run-finished")).toMatchObject({ summary: "migration run finished: 4 files migrated, 2 failed", details: { ranges: 2, filesSucceeded: 4, filesFailed: 2 } });
    expect(posts.find((p) => p.event === "failures")).toMatchObject({ details: { category: "not-found", files: 2, threshold: 1 } });
    expect(await watch.check()).toEqual([]);

    // Email alerts went through the notification outbox to the SMTP server: notify-send, woken by
    // the watch, runs on the maintenance runner (a round here as well, in case it has gone idle).
    await waitFor(async () => {
      if (smtp.messages.length >= 3) return true;
      await sendNotifications({ db: runtime.db, services: runtime.deps.accounts, log: h.log, signal: new AbortController().signal });
      return undefined;
    }, 15_000, "three alert emails");
    const subjects = smtp.messages.map((m) => m.header("subject")).sort();
    expect(subjects).toEqual([
      "Fleet alert: link local:/src -> local:/dst: breaker opened (storage-unavailable: destination root is gone)",
      "Fleet alert: migration run finished: 4 files migrated, 2 failed",
      expect.stringMatching(/^Fleet alert: no worker is consuming the migration queue/),
    ]);
    expect(smtp.messages.every((m) => m.to.join() === "ops@example.org")).toBe(true);

    // Recorded, with the channels used and the webhook's outcome (the first one after a retry).
    const { rows } = await runtime.db.query<{ event: string; channels: string; suppressed: boolean; webhook_status: string; webhook_attempts: number }>(
      `SELECT event, channels, suppressed, webhook_status::text, webhook_attempts FROM alerts ORDER BY id`,
    );
    expect(rows.map((r) => [r.event, r.channels, r.suppressed, r.webhook_status])).toEqual(
      expect.arrayContaining([
        ["breaker-opened", "webhook,email", false, "SENT"],
        ["breaker-closed", "webhook", false, "SENT"],
        ["run-finished", "webhook,email", false, "SENT"],
        ["failures", "webhook", false, "SENT"],
      ]),
    );
    expect(rows.reduce((s, r) => s + r.webhook_attempts, 0)).toBe(rows.length + 1);

    // Rate limit: over ALERT_RATE_LIMIT per event and hour, an alert is recorded but not sent.
    const limited = await raiseAlert(runtime.db, { event: "failures", dedupeKey: "failures:test:x", summary: "again", details: {}, channels: ["webhook"] }, 1);
    expect(limited).toEqual({ id: expect.any(Number), suppressed: true, channels: [] });
  });
});
