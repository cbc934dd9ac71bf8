import { mkdir } from "node:fs/promises";
import { enqueueNotifications } from "@fleet/db/sql/notifications";
import { startSmtpServer } from "@fleet/testing/smtpServer";
import type { SmtpTestServer } from "@fleet/testing/smtpServer";
import { createWorkerFixture } from "./workerFixture";
import type { LogLine, WorkerFixture } from "./workerFixture";

/**
 * Issue 9: a notification sender killed mid-send, for real. Worker A (the compiled app) runs
 * notify-send against a slow SMTP server (each DATA answered after SLOW_DATA_MS) and is
 * SIGKILLed right after the server received a message it has not answered yet: A holds the
 * rest of its claim as SENDING, one of them already delivered. Worker B, running alongside,
 * takes them back through its recovery watch (resetStaleSending once A's claims are
 * NOTIFY_SENDING_STALE old) and delivers them.
 *
 * What is asserted (at-least-once, exactly where it must be):
 * - every notification ends SENT and reaches the SMTP server, all copies of one notification
 *   with one Message-ID, distinct per notification;
 * - a notification A had recorded SENT is never sent again (one copy);
 * - one A delivered but had not recorded (SENDING at the kill, already received by the
 *   server) is sent exactly once more, with the same Message-ID (two copies);
 * - one A had claimed but not sent yet is sent once (one copy);
 * - recovery (kill → all SENT) takes at most NOTIFY_SENDING_STALE plus the watch's and
 *   BullMQ's own intervals plus a margin: seconds.
 */

const N = 16;
const STALE_MS = 5_000;
const RECOVERY_INTERVAL_MS = 500;
// BullMQ hands A's dead notify-send job to B within LOCK_DURATION + STALLED_INTERVAL (2 s), well
// before A's claims can be stale (at least two thirds of STALE_MS after the kill): that run finds
// nothing to claim and ends, so the job the sweep enqueues is never swallowed by a job that has
// already made its last look (it would then wait for the every-minute schedule).
const LOCK_DURATION_MS = 1_500;
const STALLED_INTERVAL_MS = 500;
/** Longer than the time between the server receiving a message and the kill, on any machine. */
const SLOW_DATA_MS = 1_500;
// After the kill, the sweep comes when A's last renewed claim is STALE_MS old (a pass every
// RECOVERY_INTERVAL, ±20 %, a dead A's lease lapsing within one more) and enqueues the
// notify-send that B runs at once. The margin covers delivering N messages (a new SMTP
// session each, about 130 ms here) and a loaded machine.
const RECOVERY_BOUND_MS = Math.max(STALE_MS + 3 * RECOVERY_INTERVAL_MS, LOCK_DURATION_MS + STALLED_INTERVAL_MS) + 8_000;

describe("notification sender SIGKILLed mid-send", () => {
  let smtp: SmtpTestServer;
  let fx: WorkerFixture;

  beforeAll(async () => {
    smtp = await startSmtpServer();
    fx = await createWorkerFixture("notify-crash", {
      WORKER_QUEUES: "maintenance",
      SMTP_HOST: smtp.host,
      SMTP_PORT: String(smtp.port),
      SMTP_FROM: "Fleet <fleet@example.org>",
      SMTP_TIMEOUT: "10s",
      NOTIFY_SENDING_STALE: `${STALE_MS}ms`,
      RECOVERY_INTERVAL: `${RECOVERY_INTERVAL_MS}ms`,
      LOCK_DURATION: `${LOCK_DURATION_MS}ms`,
      STALLED_INTERVAL: `${STALLED_INTERVAL_MS}ms`,
    });
    // A worker checks its storages at start; no file is migrated here.
    await mkdir(fx.sourceDir, { recursive: true });
    await mkdir(fx.destDir, { recursive: true });
  });
  afterAll(async () => {
    await fx?.close();
    await smtp?.stop();
  });

  it("a new sender delivers every message after the sweeper takes A's claims back; only the message A delivered unrecorded is sent twice, with its Message-ID", async () => {
    const db = fx.runtime.db;
    await enqueueNotifications(
      db,
      Array.from({ length: N }, (_, i) => ({
        dedupeKey: `pre-migration:7:${i + 1}`,
        recipient: `user${i + 1}@example.org`,
        template: "pre-migration",
        data: { name: `User ${i + 1}`, email: `user${i + 1}@example.org`, runDate: "2026-12-05" },
      })),
    );
    const rows = async () =>
      (
        await db.query<{ id: number; recipient: string; status: string; attempts: number; claimedAt: Date | null }>(
          `SELECT id::int AS id, recipient, status::text AS status, attempts, claimed_at AS "claimedAt" FROM notification ORDER BY id`,
        )
      ).rows;
    smtp.dataDelayMs = SLOW_DATA_MS;

    const a = fx.spawnWorker("A");
    await a.started();
    await fx.runtime.deps.jobs.enqueue("notify-send", {});
    await fx.waitFor(async () => smtp.messages.length >= 1, 20_000, "A to deliver a first message");
    // B runs alongside: its recovery watch looks every RECOVERY_INTERVAL while A is alive
    // (and must take nothing from it: A renews its claims).
    const b = fx.spawnWorker("B");
    await b.started();

    // The moment the server has received a message and holds its reply: A is mid-send.
    const before = smtp.messages.length;
    await fx.waitFor(async () => smtp.messages.length > before, 20_000, "A to deliver one more message", 5);
    a.signal("SIGKILL");
    expect(await a.exited).toMatchObject({ code: null, signal: "SIGKILL" });
    smtp.dataDelayMs = 0; // the server is no longer slow; what follows is recovery alone

    // What A left: frozen now that it is gone.
    const atKill = await rows();
    const received = smtp.messages.map((m) => m.to[0]!);
    const sentAtKill = atKill.filter((r) => r.status === "SENT");
    const sendingAtKill = atKill.filter((r) => r.status === "SENDING");
    expect(sentAtKill.length + sendingAtKill.length).toBe(N); // one claim took them all (NOTIFY_BATCH 50)
    expect(sentAtKill.length).toBeGreaterThanOrEqual(1);
    expect(sendingAtKill.length).toBeGreaterThanOrEqual(2);
    // A's last renewal of its claims (by the database's clock, on this machine): they are stale
    // STALE_MS after it, not before.
    const lastRenewal = Math.max(...sendingAtKill.map((r) => r.claimedAt!.getTime()));
    for (const r of sentAtKill) expect(received).toContain(r.recipient);
    // The last message the server received was never answered: A died holding it SENDING.
    const inFlight = received[received.length - 1]!;
    expect(sendingAtKill.map((r) => r.recipient)).toContain(inFlight);
    const deliveredUnrecorded = sendingAtKill.filter((r) => received.includes(r.recipient));
    expect(deliveredUnrecorded.map((r) => r.recipient)).toEqual([inFlight]);

    await fx.waitFor(async () => (await rows()).every((r) => r.status === "SENT"), RECOVERY_BOUND_MS, "every notification SENT after the kill", 100);
    // The sweep that returned them: B's recovery watch (resetStaleSending), every SENDING row.
    const sweeps = b.logs.filter((l: LogLine) => l.msg === "recovered orphaned work (owner stopped heartbeating)" && Number(l.staleSending ?? 0) > 0);
    expect(sweeps.reduce((n, l) => n + Number(l.staleSending), 0)).toBe(sendingAtKill.length);
    // Not before the claims were stale: nobody took them from A early. Measured from A's last
    // renewal to the sweep itself (a bound from the kill to every message sent assumed renewals
    // on time, and let a sweep a second early pass behind the time the messages take).
    expect(Math.min(...sweeps.map((l) => Date.parse(String(l.time)))) - lastRenewal).toBeGreaterThanOrEqual(STALE_MS);

    const final = await rows();
    expect(final.every((r) => r.status === "SENT")).toBe(true);
    const copies = (recipient: string) => smtp.messages.filter((m) => m.to[0] === recipient);
    const messageIds = new Set<string>();
    for (const r of final) {
      const mine = copies(r.recipient);
      const ids = new Set(mine.map((m) => m.header("message-id")));
      expect([r.recipient, ids.size]).toEqual([r.recipient, 1]);
      const id = [...ids][0]!;
      expect(id).toMatch(new RegExp(`^<fleet-${r.id}-pre-migration-7-\\d+@fleet\\.invalid>$`));
      messageIds.add(id);
      const wasSent = sentAtKill.some((s) => s.id === r.id);
      const expected = wasSent ? 1 : r.recipient === inFlight ? 2 : 1;
      expect([r.recipient, mine.length]).toEqual([r.recipient, expected]);
      // Claimed once by A; once more by B for what A left SENDING.
      expect([r.recipient, r.attempts]).toEqual([r.recipient, wasSent ? 1 : 2]);
    }
    expect(messageIds.size).toBe(N);
    expect(smtp.messages).toHaveLength(N + 1);
    // B is a live sender: nothing of its own is left SENDING, and it is still up.
    expect(b.child.exitCode).toBeNull();
  }, 60_000);
});
