import { rm } from "node:fs/promises";
import { batchCounts } from "@fleet/db/sql/accountBatches";
import { setServerEnabled } from "@fleet/db/sql/migrationServers";
import { createPipelineHarness, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { startConsentApi } from "./consentApiFixture";
import type { ConsentFixture } from "./consentApiFixture";
import { accountStates } from "./accountsFixture";
import { startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";

/**
 * the counts shown for a batch (`fleet accounts` views, dashboard: batchCounts) must put
 * every planned account in exactly one outcome. An account postponed out of a night, whose user
 * then withdraws consent at the next day's 13:00 sync (before it is planned again), is counted
 * twice in that night's batch: as postponed (its assignments) and as revoked (its status).
 */

const RUN_DATE = "2026-11-30";
let site: AccountSite;
let api: ConsentFixture;
let h: PipelineHarness | undefined;
const consent = (id: string) => ({ id, email: `${id}@example.org`, name: `User ${id}`, consentedAt: "2026-11-29T09:00:00Z" });

beforeAll(async () => {
  site = await startAccountSite();
  api = await startConsentApi([[consent("p1"), consent("p2")]]);
});
afterAll(async () => {
  await h?.close();
  await api?.close();
  await site?.ssh.stop();
  if (site) await rm(site.dir, { recursive: true, force: true });
});

async function run(name: "accounts-sync" | "accounts-prepare" | "accounts-run") {
  const job = await h!.runtime.deps.jobs.enqueue(name, { runDate: RUN_DATE }, { jobId: `${name}-${Math.random().toString(36).slice(2)}` });
  const { state, job: done } = await finishedJob(h!.runtime, "maintenance", job.id!, 60_000);
  if (state !== "completed") throw new Error(`${name} ${state}: ${done.failedReason}`);
  return done.returnvalue as Record<string, unknown>;
}

it("a postponed account whose consent is then revoked is counted once in its batch", async () => {
  h = await createPipelineHarness("revoked-counts", { ...site.env, ACCOUNTS_CONSENT_URL: api.url, ACCOUNTS_NOTICE_POLICY: "none", ACCOUNTS_RECHECK: "1s", NOTIFY_BACKOFF: "200ms" });
  await h.startRunner({ concurrency: 2 });
  expect(await run("accounts-sync")).toMatchObject({ inserted: 2 });
  const plan = await run("accounts-prepare");
  expect(plan).toMatchObject({ created: true, accounts: 2 });
  // No migration server left tonight: both accounts are postponed (counted in the batch).
  await setServerEnabled(h.runtime.db, "mig1", false);
  await setServerEnabled(h.runtime.db, "mig2", false);
  await run("accounts-run");
  const batchId = plan.batchId as number;
  await waitFor(async () => (await h!.runtime.db.query(`SELECT status FROM migration_batch WHERE id = $1`, [batchId])).rows[0]?.status === "DONE", 60_000, "batch finished");
  expect(await accountStates(h.runtime)).toEqual({ p1: "POSTPONED", p2: "POSTPONED" });
  // Next day 13:00: p1's user withdraws consent.
  api.pages[0] = [{ ...consent("p1"), revokedAt: "2026-12-01T08:00:00Z" }, consent("p2")];
  expect(await run("accounts-sync")).toMatchObject({ revoked: 1 });
  expect(await accountStates(h.runtime)).toEqual({ p1: "REVOKED", p2: "POSTPONED" });

  const live = await batchCounts(h.runtime.db, batchId);
  const total = Object.values(live).reduce((a, b) => a + b, 0);
  expect({ live, total }).toEqual({ live: expect.any(Object), total: 2 });
}, 120_000);
