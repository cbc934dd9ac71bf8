import { readdir } from "node:fs/promises";
import { waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { insertAccounts } from "./accountsFixture";
import { addSecondEntry, openSiteHarness, prepareAndRun, startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";

/**
 * A try of a step that met a server fault (its sshd died under the command: no result came
 * back) is the server's fault, not the step's: it must not use up one of the step's
 * `retry.attempts` (found by review: every try counted, so with `attempts: 2` a server fault
 * followed by one real, retryable failure failed the account for good). Real sshd; the server
 * made unreachable by a host key it does not have.
 */

const RUN_DATE = "2026-11-30";
let site: AccountSite;
let h: PipelineHarness | undefined;

beforeAll(async () => {
  site = await startAccountSite();
});
afterAll(async () => {
  await h?.close();
  await site?.stop();
});

it("a server fault does not count against the step's retries: fault, then a retryable failure, then done", async () => {
  // A second SSH entry for the same sshd, with its own known_hosts: "sync1's machine". Swapped
  // for a wrong host key, its connections are refused at the handshake: nothing runs there.
  const box2 = await addSecondEntry(site, "box2", "faultattempts");
  // The sync's first run fails (retryable), its second is done; the export before it gives the
  // test time to make sync1 unreachable before the sync's first try.
  h = await openSiteHarness(
    site,
    "faultattempts",
    `servers:
  exp1: { ssh: box, role: export, capacity: 5 }
  sync1: { ssh: box2, role: sync, capacity: 5 }
steps:
  - name: export
    role: export
    command: sleep 4
  - name: sync
    role: sync
    command: if mkdir -- "$FX_STATE"/busy-{externalId} 2>/dev/null; then echo "sync busy, try again" >&2; exit 75; else echo synced; fi
    timeout: 30s
    retry: { attempts: 2, backoff: [200ms] }
`,
    { SSH_SERVERS_FILE: box2.serversFile, ACCOUNTS_RECHECK: "1s", ACCOUNTS_PROBE_TIMEOUT: "5s" },
  );
  await insertAccounts(h.runtime, [{ externalId: "acc1" }]);
  await h.startRunner({ concurrency: 2 });
  await prepareAndRun(h, RUN_DATE, "faultattempts");
  const db = h.runtime.db;
  await waitFor(async () => (await db.query(`SELECT 1 FROM account_step WHERE step = 0 AND phase = 'RUNNING'`)).rowCount, 30_000, "the export running");
  await box2.refuse();
  // The sync's first try cannot reach sync1 (its host key refused): a server fault, account held.
  await waitFor(async () => (await db.query(`SELECT 1 FROM migration_log WHERE message LIKE 'sync: server sync1 unreachable%'`)).rowCount, 60_000, "the sync's try refused by sync1");
  expect(await readdir(site.state)).not.toContain("busy-acc1");
  await box2.admit();
  await waitFor(async () => (await db.query(`SELECT status FROM migration_batch WHERE run_date = $1`, [RUN_DATE])).rows[0]?.status === "DONE", 60_000, "batch finished");
  const { rows } = await db.query(`SELECT status, last_error FROM migration_queue WHERE external_id = 'acc1'`);
  const { rows: step } = await db.query(`SELECT phase, attempt, output FROM account_step WHERE step = 1`);
  expect({ account: rows[0], step: step[0] }).toEqual({ account: { status: "DONE", last_error: null }, step: { phase: "DONE", attempt: 2, output: expect.stringContaining("synced") } });
}, 150_000);
