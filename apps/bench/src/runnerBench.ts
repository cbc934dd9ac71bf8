import { loadavg } from "node:os";
import { Queue, Worker } from "bullmq";
import type { Job } from "bullmq";
import { z } from "zod";
import { buildCatalogue } from "@fleet/core/catalogue";
import { defineJob } from "@fleet/core/jobDefinition";
import { JobRunner } from "@fleet/core/jobRunner";
import type { OperationRecorder } from "@fleet/core/operationRecorder";
import { createLogger } from "@fleet/core/logger";
import { createMetrics } from "@fleet/core/metrics";
import { bullPrefix, createRedis } from "@fleet/core/redis";
import { BatchedOperationHistory } from "@fleet/db/sql/operationBatch";
import type { BenchState } from "./benchState";
import { round } from "./say";

/**
 * P3 / P3h (issue 15, item 4): the runner's own cost. No-op jobs through Fleet's JobRunner
 * and a one-job catalogue, without and with the PostgreSQL operation history, against a raw
 * BullMQ Worker with the same connection, concurrency and jobs, in this process. The three are
 * interleaved round by round (the machine is shared: only same-run ratios mean anything) and
 * the best round of each counts. The load average is recorded next to every figure.
 */

const QUEUE = "bench-runner";
const JOB = "bench-noop";

export interface RunnerFigure {
  jobsPerSec: number;
  seconds: number;
  /** 1-minute load average when the measurement ended (the machine is shared). */
  load1: number;
}

export interface RunnerResults {
  jobs: number;
  concurrency: number;
  raw: RunnerFigure;
  fleet: RunnerFigure;
  fleetHistory: RunnerFigure;
  /** Every round, in the order measured: [raw, fleet, fleetHistory] jobs/s. */
  rounds: Array<[number, number, number]>;
  /** Rows in operation_status after the last history round: 2 per job (started, completed). */
  historyRows: number;
}

export interface RunnerBenchOptions {
  jobs: number;
  rounds: number;
  concurrency: number;
}

type Kind = "raw" | "fleet" | "fleetHistory";

export async function measureRunner(bench: BenchState, options: RunnerBenchOptions): Promise<RunnerResults> {
  const { say, config, runtime } = bench;
  const prefix = bullPrefix(config.FLEET_PREFIX);
  const producer = createRedis(config.REDIS_URL, "producer");
  const queue = new Queue(QUEUE, { connection: producer, prefix });
  const best: Record<Kind, RunnerFigure | undefined> = { raw: undefined, fleet: undefined, fleetHistory: undefined };
  const rounds: Array<[number, number, number]> = [];
  let historyRows = 0;
  try {
    for (let r = 1; r <= options.rounds; r++) {
      // Seconds-long rounds: let the previous round's (and measurement's) PostgreSQL aftermath finish first.
      await bench.settle({ quiet: true });
      const row: number[] = [];
      for (const kind of ["raw", "fleet", "fleetHistory"] as const) {
        await queue.obliterate({ force: true });
        if (kind === "fleetHistory") await runtime.db.query("TRUNCATE operations, operation_status");
        await fill(queue, options.jobs);
        const figure = await consume(kind, options, config.REDIS_URL, prefix, runtime.db);
        row.push(figure.jobsPerSec);
        say(`runner round ${r} ${kind}: ${figure.jobsPerSec} jobs/s (${figure.seconds} s, load ${figure.load1})`);
        if (!best[kind] || figure.jobsPerSec > best[kind].jobsPerSec) best[kind] = figure;
        if (kind === "fleetHistory") {
          const { rows } = await runtime.db.query<{ n: number }>("SELECT count(*)::int AS n FROM operation_status");
          historyRows = rows[0]?.n ?? 0;
        }
      }
      rounds.push(row as [number, number, number]);
    }
    await queue.obliterate({ force: true });
  } finally {
    await queue.close();
    producer.disconnect();
  }
  return { jobs: options.jobs, concurrency: options.concurrency, raw: best.raw!, fleet: best.fleet!, fleetHistory: best.fleetHistory!, rounds, historyRows };
}

async function fill(queue: Queue, jobs: number): Promise<void> {
  const BULK = 1_000;
  for (let i = 0; i < jobs; i += BULK) {
    const n = Math.min(BULK, jobs - i);
    await queue.addBulk(Array.from({ length: n }, (_, k) => ({ name: JOB, data: { n: i + k }, opts: { removeOnComplete: true, removeOnFail: true } })));
  }
}

async function consume(kind: Kind, options: RunnerBenchOptions, redisUrl: string, prefix: string, db: BenchState["runtime"]["db"]): Promise<RunnerFigure> {
  const connection = createRedis(redisUrl, "worker");
  let done = 0;
  let finish: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const onCompleted = () => {
    if (++done === options.jobs) finish();
  };
  let start = 0;
  try {
    if (kind === "raw") {
      const worker = new Worker(QUEUE, async (job: Job) => ({ n: (job.data as { n: number }).n }), { connection, prefix, concurrency: options.concurrency, autorun: false });
      worker.on("completed", onCompleted);
      start = performance.now();
      void worker.run();
      await finished;
      const seconds = (performance.now() - start) / 1000;
      await worker.close();
      return figure(options.jobs, seconds);
    }
    const history: OperationRecorder | undefined = kind === "fleetHistory" ? new BatchedOperationHistory(db) : undefined;
    const catalogue = buildCatalogue({
      declaredNames: [JOB],
      queues: [QUEUE],
      definitions: {
        [JOB]: defineJob({ name: JOB, queue: QUEUE, description: "no-op", schema: z.object({ n: z.number().int() }), handle: async (payload) => ({ n: payload.n }) }),
      },
    });
    const runner = new JobRunner({
      catalogue,
      consumers: [{ queue: QUEUE, concurrency: options.concurrency }],
      connection,
      prefix,
      deps: {},
      // A worker logs JSON at info; nothing is logged per successful job.
      log: createLogger({ name: "bench-runner", LOG_LEVEL: "info", LOG_FORMAT: "json", destination: { write: () => undefined } }),
      metrics: createMetrics(),
      windows: new Map(),
      backoff: { scheduleMs: [1_000], jitter: 0 },
      stalledIntervalMs: 30_000,
      maxStalledCount: 1,
      lockDurationMs: 30_000,
      ...(history ? { history } : {}),
    });
    for (const w of runner.workers) w.on("completed", onCompleted);
    start = performance.now();
    await runner.start();
    await finished;
    // The history is part of the cost: the measurement ends when the last batch is written.
    await history?.flush?.();
    const seconds = (performance.now() - start) / 1000;
    await runner.stop(1_000);
    return figure(options.jobs, seconds);
  } finally {
    connection.disconnect();
  }
}

function figure(jobs: number, seconds: number): RunnerFigure {
  return { jobsPerSec: Math.round(jobs / seconds), seconds: round(seconds, 2), load1: round(loadavg()[0]!, 2) };
}
