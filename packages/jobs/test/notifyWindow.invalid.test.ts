import { enqueueNotifications } from "@fleet/db/sql/notifications";
import { startSmtpServer } from "@fleet/testing/smtpServer";
import type { SmtpTestServer } from "@fleet/testing/smtpServer";
import { sendNotifications } from "../src/accounts/sendNotifications";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * NOTIFY_WINDOW (run-window syntax in FLEET_TZ) is stored on each notification and parsed at send
 * time. Found by review: it was not checked at start, and a typo made every send round throw
 * with its claims held, so no notice was ever delivered. Now the configuration refuses it; a row
 * stored with an invalid window (before that check existed) gets today's NOTIFY_WINDOW instead,
 * and the round goes on.
 */

let smtp: SmtpTestServer;
let h: PipelineHarness;

beforeAll(async () => {
  smtp = await startSmtpServer();
});
afterAll(async () => {
  await h?.close();
  await smtp?.stop();
});

it("a NOTIFY_WINDOW that is not run-window syntax is refused at start, naming the variable", async () => {
  await expect(createPipelineHarness("notify-window-typo", { SMTP_HOST: smtp.host, SMTP_PORT: String(smtp.port), NOTIFY_WINDOW: "weekdays 08:00-20:00" })).rejects.toThrow(/NOTIFY_WINDOW: .*unknown day "weekdays"/);
});

it("a message stored with an invalid delivery window is sent under today's NOTIFY_WINDOW, and the others with it", async () => {
  h = await createPipelineHarness("notify-window-stored", { SMTP_HOST: smtp.host, SMTP_PORT: String(smtp.port), NOTIFY_WINDOW: "" });
  const { db } = h.runtime;
  await enqueueNotifications(db, [
    { dedupeKey: "pre-migration:1:1", recipient: "user1@example.org", template: "pre-migration", data: { name: "U1", email: "user1@example.org", runDate: "2026-11-30" }, deliveryWindow: "weekdays 08:00-20:00" },
    { dedupeKey: "pre-migration:1:2", recipient: "user2@example.org", template: "pre-migration", data: { name: "U2", email: "user2@example.org", runDate: "2026-11-30" }, deliveryWindow: null },
  ]);
  const round = await sendNotifications({ db, services: h.runtime.deps.accounts, log: h.log, signal: new AbortController().signal });
  expect(round).toMatchObject({ sent: 2, deferred: 0, undeliverable: 0 });
  const { rows } = await db.query<{ dedupe_key: string; status: string }>(`SELECT dedupe_key, status FROM notification ORDER BY id`);
  expect(rows).toEqual([
    { dedupe_key: "pre-migration:1:1", status: "SENT" },
    { dedupe_key: "pre-migration:1:2", status: "SENT" },
  ]);
});
