import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startPrivatePostgres } from "@fleet/testing/privatePostgres";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import { runChaos } from "./chaosRun";
import type { ChaosReport } from "./chaosRun";

/**
 * `npm run chaos -- [--files 20000] [--batch 1000] [--workers 3] [--keep]`: the issue's
 * "Done when" measurement. A clean run and a run with 3 SIGKILLs, one FLUSHALL and one
 * PostgreSQL crash-restart, each on a fresh database of a private PostgreSQL cluster and a
 * private redis-server (the shared services are never touched), with Fleet's default recovery
 * settings. Prints both reports and the verdict as JSON on stdout; progress on stderr.
 */
async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      files: { type: "string", default: "20000" },
      batch: { type: "string", default: "1000" },
      workers: { type: "string", default: "3" },
      "sweep-min-age": { type: "string", default: "10s" },
      keep: { type: "boolean", default: false },
    },
  });
  const say = (line: string) => process.stderr.write(`[chaos] ${line}\n`);
  const workDir = await mkdtemp(join(tmpdir(), "fleet-chaos-"));
  say("starting a private redis-server and PostgreSQL cluster");
  const [redis, postgres] = await Promise.all([startPrivateRedis(), startPrivatePostgres()]);
  try {
    const common = {
      files: Number(values.files),
      batchSize: Number(values.batch),
      workers: Number(values.workers),
      redis,
      postgres,
      workDir,
      env: { TEMP_SWEEP_MIN_AGE: values["sweep-min-age"]! },
      timeoutMs: 15 * 60_000,
      sweepWaitMs: 180_000,
      say,
    };
    const clean: ChaosReport = await runChaos({ ...common, label: "clean", faults: false });
    const chaos: ChaosReport = await runChaos({ ...common, label: "chaos", faults: true });
    const verdict = {
      withinCleanPlus60s: chaos.finished && chaos.seconds <= clean.seconds + 60,
      nothingLost: chaos.lost === 0 && chaos.differing === 0 && chaos.wrongRecordedSha === 0 && chaos.successRows === chaos.files && chaos.outcomeRows === chaos.files,
      noTempFiles: chaos.tempFilesAfterSweep === 0,
      countsExact: clean.countsOff === 0 && chaos.countsOff === 0,
      noCrashes: clean.crashes.length === 0 && chaos.crashes.length === 0,
    };
    process.stdout.write(`${JSON.stringify({ clean, chaos, verdict }, null, 2)}\n`);
    if (!Object.values(verdict).every(Boolean)) process.exitCode = 1;
  } finally {
    await Promise.all([redis.stop(), postgres.destroy()]);
    if (!values.keep) await rm(workDir, { recursive: true, force: true });
    else say(`logs and trees kept in ${workDir}`);
  }
}

void main().catch((err: unknown) => {
  process.stderr.write(`chaos run failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
