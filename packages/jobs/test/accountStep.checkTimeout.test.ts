import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { accountStates, insertAccounts } from "./accountsFixture";
import { openSiteHarness, prepareAndRun, startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";

/**
 * a polled migration whose *status check* times out once (a slow status tool), while
 * the migration itself goes on and completes on the server. The check's hiccup must not start
 * the migration a second time (no account migrated twice) nor fail the account.
 */

const RUN_DATE = "2026-11-30";
let site: AccountSite;
let h: PipelineHarness | undefined;

beforeAll(async () => {
  site = await startAccountSite({
    // Status tool: the first call hangs (slow server), later calls report the migration done.
    "rv-status": `#!/bin/sh
n=$(cat "$FX_STATE/rv-$1" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$FX_STATE/rv-$1"
if [ $n -eq 1 ]; then sleep 20; fi
echo COMPLETED
`,
  });
});
afterAll(async () => {
  await h?.close();
  await site?.stop();
});

it("a status check that times out once neither restarts the migration nor fails the account", async () => {
  h = await openSiteHarness(site, "checktimeout", `servers:
  mig1: { ssh: box, role: migration, capacity: 5 }
steps:
  - name: migrate
    role: migration
    command: fx-mig-start {externalId}
    timeout: 2s
    retry: { attempts: 2, backoff: [100ms] }
    check: { command: "rv-status {externalId}", every: 300ms, done: "^COMPLETED", failed: "^FAILED", timeout: 10m }
`, { ACCOUNTS_RECHECK: "1s" });
  await insertAccounts(h.runtime, [{ externalId: "acc1" }]);
  await h.startRunner({ concurrency: 2 });
  await prepareAndRun(h, RUN_DATE, "checktimeout");
  await waitFor(async () => (await h!.runtime.db.query(`SELECT status FROM migration_batch WHERE run_date = $1`, [RUN_DATE])).rows[0]?.status === "DONE", 60_000, "batch finished");
  const calls = (await readFile(join(site.state, "calls"), "utf8")).split("\n").filter(Boolean);
  expect({ state: (await accountStates(h.runtime)).acc1, migrationStarts: calls.filter((c) => c.startsWith("mig-start")).length }).toEqual({ state: "DONE", migrationStarts: 1 });
}, 120_000);
