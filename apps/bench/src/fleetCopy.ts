import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { BenchState } from "./benchState";
import { countFiles, insertTreeRows } from "./sourceTree";
import type { SourceTree } from "./sourceTree";
import { elapsedSeconds, perSecond, round, sleep } from "./say";
import { startWorkerFleet } from "./workerFleet";

export interface FleetCopyResult {
  files: number;
  failed: number;
  seconds: number;
  filesPerSec: number;
  mbPerSec: number;
  verify: "write" | "readback";
  workers: number;
  peakWorkerRssMb: number;
}

/**
 * Where a Fleet run writes: a DESTINATION_URL, the worker environment it needs (credentials,
 * host keys), and an independent check of what arrived, run after the workers stopped.
 */
export interface FleetDestination {
  url: string;
  env?: NodeJS.ProcessEnv;
  /** Names the run in logs and worker log files, e.g. "s3" → `fleet-s3-write-worker-1.log`. */
  label?: string;
  check(bench: BenchState, tree: SourceTree): Promise<void>;
}

export interface FleetCopyOptions {
  verify: "write" | "readback";
  workers: number;
  destination: FleetDestination;
  logDir: string;
  /** Worker environment beyond the bench's own (tuning overrides). */
  workerEnv: NodeJS.ProcessEnv;
  nodeArgs: readonly string[];
  timeoutMs: number;
}

/**
 * Fleet end to end, from the local tree to a destination: the tree's source_files rows, N
 * worker processes, one seed-ranges job; timed from the enqueue until every file has an
 * outcome in migration_files. The workers hash every file (sha256) and verify the destination
 * as the product does.
 */
export async function measureFleetCopy(bench: BenchState, tree: SourceTree, options: FleetCopyOptions): Promise<FleetCopyResult> {
  const { db, deps } = bench.runtime;
  const { say } = bench;
  await bench.reset();
  await insertTreeRows(db, tree);
  await bench.settle();

  const { destination } = options;
  const name = destination.label ? `${destination.label}, ${options.verify}` : options.verify;
  const env = { ...options.workerEnv, ...destination.env, SOURCE_URL: tree.root, DESTINATION_URL: destination.url, VERIFY: options.verify };
  const label = `fleet-${destination.label ? `${destination.label}-` : ""}${options.verify}`;
  const fleet = await startWorkerFleet({ count: options.workers, env, logDir: options.logDir, label, nodeArgs: options.nodeArgs });
  let seconds: number;
  try {
    const started = process.hrtime.bigint();
    await deps.jobs.enqueue("seed-ranges", {});
    const deadline = Date.now() + options.timeoutMs;
    let lastSay = Date.now();
    for (;;) {
      const { rows } = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM migration_files");
      const done = rows[0]!.n;
      if (done >= tree.files) break;
      if (Date.now() > deadline) throw new Error(`fleet (${name}): only ${done}/${tree.files} files after ${options.timeoutMs / 1000} s`);
      if (Date.now() - lastSay > 5_000) {
        lastSay = Date.now();
        say(`  fleet (${name}): ${done}/${tree.files} files`);
      }
      await Promise.race([fleet.sample().then(() => sleep(50)), fleet.crashed]);
    }
    seconds = elapsedSeconds(started);
  } catch (err) {
    await fleet.stop();
    throw err;
  }
  const peakWorkerRssMb = await fleet.peakRssMb();
  await fleet.stop();

  const { rows } = await db.query<{ failed: number }>("SELECT count(*) FILTER (WHERE status <> 'SUCCESS')::int AS failed FROM migration_files");
  const failed = rows[0]!.failed;
  if (failed > 0) say(`  WARNING: ${failed} files failed; see \`SELECT error_category, count(*) FROM migration_files GROUP BY 1\` in ${bench.config.DATABASE_URL}`);
  await destination.check(bench, tree);

  return {
    files: tree.files,
    failed,
    seconds: round(seconds, 3),
    filesPerSec: round(perSecond(tree.files, seconds)),
    mbPerSec: round(perSecond((tree.files * tree.size) / 1_048_576, seconds), 1),
    verify: options.verify,
    workers: options.workers,
    peakWorkerRssMb: round(peakWorkerRssMb, 1),
  };
}

/** A local directory (which does not exist yet) as the destination. */
export function localDestination(destDir: string): FleetDestination {
  return {
    url: destDir,
    async check(bench, tree) {
      const onDisk = await countFiles(destDir);
      if (onDisk !== tree.files) throw new Error(`fleet left ${onDisk} files in ${destDir}, expected ${tree.files}`);
      await spotCheck(bench, tree, (key) => readFile(join(destDir, key)), destDir);
    },
  };
}

/**
 * Independent of the workers' own checks: a sample of the copies (read with `read`) hash to
 * the recorded sha256, and so do their source files.
 */
export async function spotCheck(bench: BenchState, tree: SourceTree, read: (key: string) => Promise<Buffer>, where: string): Promise<void> {
  const { rows } = await bench.runtime.db.query<{ uri: string; sha256: string }>(
    `SELECT s.uri, m.sha256 FROM migration_files m JOIN source_files s ON s.id = m.file_id
      WHERE m.status = 'SUCCESS' ORDER BY random() LIMIT 200`,
  );
  for (const row of rows) {
    const source = sha256Of(await readFile(join(tree.root, row.uri)));
    if (source !== row.sha256) throw new Error(`spot check: ${join(tree.root, row.uri)} has sha256 ${source}, recorded ${row.sha256}`);
    const copy = sha256Of(await read(row.uri));
    if (copy !== row.sha256) throw new Error(`spot check: ${row.uri} in ${where} has sha256 ${copy}, recorded ${row.sha256}`);
  }
}

const sha256Of = (bytes: Buffer): string => createHash("sha256").update(bytes).digest("hex");
