import { claimDue, enqueueNotifications, resetStaleSending } from "@fleet/db/sql/notifications";
import { startSmtpServer } from "@fleet/testing/smtpServer";
import type { SmtpTestServer } from "@fleet/testing/smtpServer";
import { sendNotifications } from "../src/accounts/sendNotifications";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/** The notification outbox against a real SMTP server (smtp-server) on loopback. */

let smtp: SmtpTestServer;
let h: PipelineHarness;

beforeEach(async () => {
  smtp = await startSmtpServer();
  h = await createPipelineHarness("account-notify", {
    SMTP_HOST: smtp.host,
    SMTP_PORT: String(smtp.port),
    SMTP_FROM: "Fleet <fleet@example.org>",
    SMTP_TIMEOUT: "3s",
    NOTIFY_BACKOFF: "100ms",
    NOTIFY_MAX_ATTEMPTS: "3",
  });
});

afterEach(async () => {
  await h?.close();
  await smtp?.stop();
});

const send = () => sendNotifications({ db: h.runtime.db, services: h.runtime.deps.accounts, log: h.log, signal: new AbortController().signal });
const preMigration = (n: number, extra: Record<string, unknown> = {}) => ({
  dedupeKey: `pre-migration:1:${n}`,
  recipient: `user${n}@example.org`,
  template: "pre-migration",
  data: { name: `User ${n}`, email: `user${n}@example.org`, runDate: "2026-11-30", ...extra },
});

async function rows() {
  const { rows } = await h.runtime.db.query<{ dedupe_key: string; status: string; attempts: number; last_error: string | null }>(
    `SELECT dedupe_key, status, attempts, last_error FROM notification ORDER BY id`,
  );
  return rows;
}

const waitPastBackoff = () => new Promise((r) => setTimeout(r, 150));

describe("notifications", () => {
  it("renders the template with the account's fields (HTML-escaped), sends each once with a stable Message-ID, and a re-decided message is not added", async () => {
    expect(await enqueueNotifications(h.runtime.db, [preMigration(1, { name: "<script>alert(1)</script> O'Neil" }), preMigration(2)])).toBe(2);
    expect(await enqueueNotifications(h.runtime.db, [preMigration(1), preMigration(2)])).toBe(0);
    expect(await send()).toMatchObject({ sent: 2, undeliverable: 0, smtpDown: false });
    expect(await send()).toMatchObject({ sent: 0 });
    expect(smtp.messages.map((m) => m.to)).toEqual([["user1@example.org"], ["user2@example.org"]]);
    const first = smtp.messages[0]!;
    expect(first.header("subject")).toBe("Your mailbox will be migrated tonight (2026-11-30)");
    expect(first.header("message-id")).toMatch(/^<fleet-\d+-pre-migration-1-1@fleet\.invalid>$/);
    const html = first.raw.slice(first.raw.indexOf("Content-Type: text/html"));
    expect(html).toContain("&lt;script&gt;alert(1)&lt;/script&gt; O&#39;Neil");
    expect(html).not.toContain("<script>");
    expect((await rows()).map((r) => r.status)).toEqual(["SENT", "SENT"]);
  });

  it("SMTP down: nothing is lost or counted as an attempt; once it is back every message goes out exactly once", async () => {
    await enqueueNotifications(h.runtime.db, [preMigration(1), preMigration(2), preMigration(3)]);
    await smtp.stop();
    const down = await send();
    expect(down).toMatchObject({ sent: 0, smtpDown: true, undeliverable: 0 });
    expect((await rows()).map((r) => [r.status, r.attempts])).toEqual([["PENDING", 0], ["PENDING", 0], ["PENDING", 0]]);
    expect((await rows())[0]!.last_error).toMatch(/SMTP unreachable/);
    // Down for longer than NOTIFY_MAX_ATTEMPTS rounds: still nothing given up.
    for (let i = 0; i < 4; i++) {
      await waitPastBackoff();
      await send();
    }
    expect((await rows()).every((r) => r.status === "PENDING")).toBe(true);

    await smtp.start();
    await waitPastBackoff();
    expect(await send()).toMatchObject({ sent: 3, smtpDown: false });
    await waitPastBackoff();
    expect(await send()).toMatchObject({ sent: 0 });
    expect(smtp.messages.map((m) => m.to[0]).sort()).toEqual(["user1@example.org", "user2@example.org", "user3@example.org"]);
  });

  it("a 5xx reply makes a message UNDELIVERABLE at once (logged); a 4xx is retried with backoff until NOTIFY_MAX_ATTEMPTS", async () => {
    smtp.reject.push({ recipient: /^gone@/, code: 550 }, { recipient: /^later@/, code: 451 });
    await enqueueNotifications(h.runtime.db, [
      { ...preMigration(1), recipient: "gone@example.org" },
      { ...preMigration(2), recipient: "later@example.org" },
      preMigration(3),
    ]);
    expect(await send()).toMatchObject({ sent: 1, undeliverable: 1, retryLater: 1 });
    for (let i = 0; i < 3; i++) {
      await waitPastBackoff();
      await send();
    }
    const final = await rows();
    expect(final.map((r) => [r.dedupe_key, r.status, r.attempts])).toEqual([
      ["pre-migration:1:1", "UNDELIVERABLE", 1],
      ["pre-migration:1:2", "UNDELIVERABLE", 3],
      ["pre-migration:1:3", "SENT", 1],
    ]);
    expect(final[0]!.last_error).toMatch(/SMTP 550/);
    const { rows: logged } = await h.runtime.db.query<{ subject: string }>(`SELECT subject FROM migration_log WHERE level = 'error' ORDER BY id`);
    expect(logged.map((l) => l.subject)).toEqual(["notification:pre-migration:1:1", "notification:pre-migration:1:2"]);
  });

  it("a sender that died between claiming and recording: the sweeper gives the message back and it is resent with the same Message-ID", async () => {
    await enqueueNotifications(h.runtime.db, [preMigration(1)]);
    await send();
    const firstId = smtp.messages[0]!.header("message-id");
    // Replay the crash: the row is claimed (SENDING) and the process is gone.
    await h.runtime.db.query(`UPDATE notification SET status = 'PENDING'`);
    expect(await claimDue(h.runtime.db, 10)).toHaveLength(1);
    expect(await send()).toMatchObject({ sent: 0 }); // a SENDING row belongs to its claimant
    expect(await resetStaleSending(h.runtime.db, 0)).toHaveLength(1);
    expect(await send()).toMatchObject({ sent: 1 });
    expect(smtp.messages.map((m) => m.header("message-id"))).toEqual([firstId, firstId]);
  });

  it("a slow but live sender keeps its claims: the sweeper, run every 200 ms with a 2 s threshold, takes nothing and each message goes out once", async () => {
    await h.close();
    // The threshold leaves the heartbeat (every third of it, ~667 ms) about 1.3 s of slack: the
    // sender, its heartbeat and the sweeper share the jest process and the shared PostgreSQL, and
    // a 900 ms threshold (300 ms beats) let a 600 ms pause of a loaded CI machine look like a
    // dead sender.
    h = await createPipelineHarness("account-notify", {
      SMTP_HOST: smtp.host,
      SMTP_PORT: String(smtp.port),
      SMTP_FROM: "Fleet <fleet@example.org>",
      SMTP_TIMEOUT: "10s",
      NOTIFY_SENDING_STALE: "2s",
    });
    smtp.dataDelayMs = 2_500; // each message outlasts the stale threshold: only the heartbeat keeps its claim
    await enqueueNotifications(h.runtime.db, [preMigration(1), preMigration(2), preMigration(3)]);
    const swept: number[] = [];
    let sweeping = true;
    const sweeper = (async () => {
      while (sweeping) {
        swept.push(...(await resetStaleSending(h.runtime.db, 2_000)));
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const result = await send();
    sweeping = false;
    await sweeper;
    expect(swept).toEqual([]);
    expect(result).toMatchObject({ sent: 3, retryLater: 0, undeliverable: 0 });
    expect((await rows()).map((r) => [r.status, r.attempts])).toEqual([["SENT", 1], ["SENT", 1], ["SENT", 1]]);
    expect(smtp.messages.map((m) => m.to[0])).toEqual(["user1@example.org", "user2@example.org", "user3@example.org"]);
  }, 30_000);

  it("holds a message outside its delivery window without using an attempt", async () => {
    // A one-minute window on a day that is not today: closed now.
    const otherDay = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"][(new Date().getUTCDay() + 3) % 7];
    await enqueueNotifications(h.runtime.db, [{ ...preMigration(1), deliveryWindow: `${otherDay} 10:00-10:01` }]);
    expect(await send()).toMatchObject({ sent: 0, deferred: 1 });
    const { rows: r } = await h.runtime.db.query<{ status: string; attempts: number; next_attempt_at: Date }>(`SELECT status, attempts, next_attempt_at FROM notification`);
    expect(r[0]).toMatchObject({ status: "PENDING", attempts: 0 });
    expect(r[0]!.next_attempt_at.getTime()).toBeGreaterThan(Date.now() + 3600_000);
    expect(smtp.messages).toHaveLength(0);
  });
});
