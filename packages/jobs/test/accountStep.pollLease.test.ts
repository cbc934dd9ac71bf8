import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import type { RecoveryWatch } from "../src/maintenance/recoveryWatch";
import { waitFor, watchRecovery } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { accountStates, insertAccounts } from "./accountsFixture";
import { openSiteHarness, startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";

/**
 * The status checks of a polled step under the step's lease, on real servers (sshd running the
 * site's tools, Postgres, a private Redis emptied mid-check). Found by probing: with Redis
 * emptied while a status check ran, the flow re-derived from PostgreSQL polled the same server
 * at the same time, and both runs acted on the answer (the step recorded done twice). A run that
 * finds another run's check in flight waits for it and goes on from its outcome.
 *
 * `fx-slow-check ID` appends `check-start [ID] PID` to $FX_STATE/checks, runs while
 * $FX_STATE/hang-check-ID exists, appends `check-end [ID] PID` and answers COMPLETED.
 */

const RUN_DATE = "2026-11-30";
let site: AccountSite;
let h: PipelineHarness | undefined;
let redis: PrivateRedis | undefined;
let watch: RecoveryWatch | undefined;

/** A polled migrate step checked by fx-slow-check. */
const POLL_LEASE_WORKFLOW = `servers:
  mig1: { ssh: box, role: migration, capacity: 5 }
steps:
  - name: migrate
    role: migration
    command: fx-mig-start {externalId}
    timeout: 5m
    check: { command: "fx-slow-check {externalId}", every: 200ms, done: "^COMPLETED", failed: "^FAILED", timeout: 5m }
`;

beforeAll(async () => {
  site = await startAccountSite({
    "fx-slow-check": `#!/bin/sh
printf 'check-start [%s] %s\\n' "$1" "$$" >> "$FX_STATE/checks"
while [ -e "$FX_STATE/hang-check-$1" ]; do sleep 0.1; done
printf 'check-end [%s] %s\\n' "$1" "$$" >> "$FX_STATE/checks"
echo COMPLETED
`,
  });
});

afterAll(async () => {
  await watch?.stop();
  await h?.close();
  await redis?.stop();
  await site?.stop();
});

const checkLines = async () => (await readFile(join(site.state, "checks"), "utf8").catch(() => "")).split("\n").filter(Boolean);

it("Redis emptied while a status check runs: the re-derived job waits for it instead of checking at the same time, and the step is recorded done once", async () => {
  redis = await startPrivateRedis();
  h = await openSiteHarness(site, "step-poll-lease", POLL_LEASE_WORKFLOW, {
    REDIS_URL: redis.url,
    ACCOUNTS_RECHECK: "1s",
    ACCOUNTS_STEP_LEASE: "30s",
  });
  const x = h;
  await insertAccounts(x.runtime, [{ externalId: "pl1" }]);
  await writeFile(join(site.state, "hang-check-pl1"), "");
  await x.startRunner({ concurrency: 4 });
  watch = watchRecovery(x);
  await x.runtime.deps.jobs.enqueue("accounts-run", { runDate: RUN_DATE }, { jobId: "accounts-run-poll-lease" });
  await waitFor(async () => (await checkLines()).length === 1 || undefined, 60_000, "pl1's first status check in flight");
  await redis.flushAll();

  // The flow is re-derived and its job for the step comes to the check still in flight: it
  // checks too (two check-starts) or waits for it.
  await waitFor(async () => (await checkLines()).length >= 2 || x.logLines.some((l) => l.includes("step's status check running in another run: waiting for it")) || undefined, 60_000, "the re-derived step job");
  await rm(join(site.state, "hang-check-pl1"));
  await waitFor(async () => (await x.runtime.db.query<{ status: string }>(`SELECT status FROM migration_batch WHERE run_date = $1`, [RUN_DATE])).rows[0]?.status === "DONE" || undefined, 60_000, "the batch to finish");

  expect(await accountStates(x.runtime)).toEqual({ pl1: "DONE" });
  // One check, and the step recorded done once.
  const checkStarts = (await checkLines()).filter((l) => l.startsWith("check-start")).length;
  const { rowCount: doneRecorded } = await x.runtime.db.query(`SELECT message FROM migration_log WHERE subject = 'account:pl1' AND message = 'migrate: done on mig1'`);
  expect({ checkStarts, doneRecorded }).toEqual({ checkStarts: 1, doneRecorded: 1 });
  expect(x.logLines.some((l) => l.includes("Redis lost the fleet's state"))).toBe(true);
}, 150_000);
