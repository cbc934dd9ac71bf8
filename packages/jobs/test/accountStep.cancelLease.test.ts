import type { ChildProcess } from "node:child_process";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import type { PipelineHarness } from "./pipelineHarness";
import { waitFor } from "./pipelineHarness";
import type { AccountSite } from "./accountRunFixture";
import { killInFlightAndRestart, moveAccount, moveWorkflow, openMoveHarness, spawnCompiledWorker, startMoveSite, stopMoveSite } from "./accountStepMoveFixture";

/**
 * The cancel run of a step that moves to another server (the command left on the old server is
 * cancelled there first) under the step's lease, on real processes (the compiled worker app,
 * sshd, Postgres, a private Redis emptied mid-cancel). Found by probing: with Redis emptied while
 * the cancel ran, the re-derived job ran the cancel again at the same time; and when that second
 * cancel ended after the first run had started the command on the new server, it cleared the
 * step's started_on there — a later move or cancel of the account would not cancel the command
 * running on the new server. A run that finds the cancel in flight waits for it.
 *
 * `fx-cancel-nth ID SERVER` counts its runs per account in $FX_STATE/cn-ID, appends
 * `cancel-start [ID] [SERVER] N` to $FX_STATE/cancels, runs while $FX_STATE/hang-cancel-ID-N
 * exists and appends `cancel-end [ID] [SERVER] N`.
 */

let site: AccountSite;
let h: PipelineHarness | undefined;
let redis: PrivateRedis | undefined;
const children: ChildProcess[] = [];

beforeAll(async () => {
  site = await startMoveSite({
    "fx-cancel-nth": `#!/bin/sh
n=$(cat "$FX_STATE/cn-$1" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$FX_STATE/cn-$1"
printf 'cancel-start [%s] [%s] %s\\n' "$1" "$2" "$n" >> "$FX_STATE/cancels"
while [ -e "$FX_STATE/hang-cancel-$1-$n" ]; do sleep 0.1; done
printf 'cancel-end [%s] [%s] %s\\n' "$1" "$2" "$n" >> "$FX_STATE/cancels"
echo "migration of $1 on $2 aborted"
`,
  });
});
afterAll(async () => {
  await stopMoveSite(site, h, children);
  await redis?.stop();
});

const cancelLines = async () => (await readFile(join(site.state, "cancels"), "utf8").catch(() => "")).split("\n").filter(Boolean);

it("Redis emptied while the cancel on the old server runs: the re-derived job waits for it, and the cancel owed on the new server stays recorded", async () => {
  redis = await startPrivateRedis();
  const workflow = moveWorkflow({}).replace("cancel: fx-cancel {externalId} {server}", "cancel: fx-cancel-nth {externalId} {server}");
  h = await openMoveHarness(site, h, "step-cancel-lease", workflow, { REDIS_URL: redis.url });
  const moved = await moveAccount(site, h, "step-cancel-lease", "cl1");
  // Each worker's recovery watch notices the emptied Redis and re-derives the flow.
  const t = { ...moved, env: { ...moved.env, RECOVERY_INTERVAL: "500ms" } };
  for (const n of [1, 2]) await writeFile(join(site.state, `hang-cancel-cl1-${n}`), "");
  // acc's command hangs on m1, its worker is SIGKILLed, m1 disabled; worker B moves the step to
  // m2 and first cancels the command on m1 (cancel 1, which hangs).
  await killInFlightAndRestart(site, t, (env) => spawnCompiledWorker(site.dir, env, children), async () => {});
  await waitFor(async () => (await cancelLines()).includes("cancel-start [cl1] [m1] 1") || undefined, 60_000, "the cancel on m1 in flight");
  const { rows: batch } = await t.x.runtime.db.query<{ id: number; account: number }>(`SELECT batch_id AS id, id AS account FROM migration_queue WHERE external_id = 'cl1'`);
  const stepJob = `account-step-${batch[0]!.id}-${batch[0]!.account}-0`;
  const remote = t.x.runtime.deps.jobs.queue("remote");
  await redis.flushAll();

  // The re-derived job for the step comes to the cancel in flight: it cancels too, or waits.
  await waitFor(async () => (await cancelLines()).filter((l) => l.startsWith("cancel-start")).length >= 2 || (await remote.getJobState(stepJob)) === "delayed" || undefined, 60_000, "the re-derived step job");
  const concurrentCancels = (await cancelLines()).filter((l) => l.startsWith("cancel-start"));

  // Cancel 1 ends; the step starts on m2, where its command hangs now.
  await writeFile(join(site.state, "hang-cl1"), "");
  await rm(join(site.state, "hang-cancel-cl1-1"));
  await waitFor(async () => ((await t.calls()).includes("run [cl1] [m2]") && (await t.stepRow())?.phase === "RUNNING") || undefined, 60_000, "the step running on m2");
  // A second cancel, if one ran, ends too and records what it did.
  await rm(join(site.state, "hang-cancel-cl1-2"));
  if (concurrentCancels.length > 1) {
    await waitFor(async () => (await cancelLines()).includes("cancel-end [cl1] [m1] 2") || undefined, 30_000, "cancel 2 to end");
    await waitFor(async () => (await t.x.runtime.db.query(`SELECT 1 FROM account_step WHERE started_on IS NULL`)).rowCount || undefined, 10_000, "cancel 2 recorded").catch(() => undefined);
  }
  const { rows: step } = await t.x.runtime.db.query<{ phase: string; server: string; started_on: string | null }>(`SELECT phase, server, started_on FROM account_step`);
  expect({ concurrentCancels, step: step[0] }).toEqual({
    concurrentCancels: ["cancel-start [cl1] [m1] 1"],
    // started_on names m2: cancelling or moving the account later cancels the command there.
    step: { phase: "RUNNING", server: "m2", started_on: "m2" },
  });
  expect((await t.runsAndCancels()).filter((l) => l.startsWith("run"))).toEqual(["run [cl1] [m1]", "run [cl1] [m2]"]);
}, 180_000);
