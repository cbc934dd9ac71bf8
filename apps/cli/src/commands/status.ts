import { MultiBar, Presets } from "cli-progress";
import { migrationProgress, failuresByCategory, transferLinkRates } from "@fleet/db/sql/reports";
import type { MigrationProgress, TransferLinkRate } from "@fleet/db/sql/reports";
import type { DbPool } from "@fleet/db/pool";

export interface StatusSnapshot extends MigrationProgress {
  /** Files with an outcome (success or final failure) out of the inventory. */
  finished: number;
  /** Files per second over the recent window, from successive samples (null until known). */
  rate: number | null;
  /** Seconds left at the current rate (null when unknown). */
  etaSeconds: number | null;
  done: boolean;
}

export interface StatusOptions {
  maxRetries: number;
  retryableCategories: readonly string[];
}

/** Reads progress and derives rate and ETA from the previous snapshot. */
export async function readStatus(db: DbPool, options: StatusOptions, previous?: { at: number; finished: number; rate: number | null }): Promise<StatusSnapshot> {
  const p = await migrationProgress(db, options);
  const finished = p.files.SUCCESS + p.files.FAIL;
  let rate: number | null = null;
  if (previous) {
    const dt = (Date.now() - previous.at) / 1000;
    const instant = dt > 0 ? (finished - previous.finished) / dt : 0;
    // Smooth, so the ETA does not jump with every sample.
    rate = previous.rate === null ? instant : 0.7 * previous.rate + 0.3 * instant;
  } else if (p.firstAttemptAt && p.lastAttemptAt && finished > 0) {
    const span = (p.lastAttemptAt.getTime() - p.firstAttemptAt.getTime()) / 1000;
    rate = span > 0 ? finished / span : null;
  }
  const left = Math.max(p.sourceFiles - finished, 0);
  const etaSeconds = rate && rate > 0 ? left / rate : null;
  const done = p.sourceFiles > 0 && left === 0 && p.files.RETRYING === 0 && p.ranges.PENDING === 0 && p.ranges.PROCESSING === 0;
  return { ...p, finished, rate, etaSeconds, done };
}

export function formatStatus(s: StatusSnapshot): string {
  const pct = s.sourceFiles ? ((100 * s.finished) / s.sourceFiles).toFixed(1) : "0.0";
  const lines = [
    `source files   ${s.sourceFiles.toLocaleString("en-US")} (${formatBytes(s.sourceBytes)})`,
    `ranges         pending ${s.ranges.PENDING}  processing ${s.ranges.PROCESSING}  complete ${s.ranges.COMPLETE}`,
    `files          success ${s.files.SUCCESS.toLocaleString("en-US")}  fail ${s.files.FAIL.toLocaleString("en-US")} (final ${s.failedFinal.toLocaleString("en-US")})  retrying ${s.files.RETRYING}`,
    `progress       ${pct}%  ${formatBytes(s.bytesMigrated)} migrated`,
    `rate           ${s.rate === null ? "-" : `${s.rate.toFixed(0)} files/s`}  eta ${s.etaSeconds === null ? "-" : formatDuration(s.etaSeconds)}`,
  ];
  return lines.join("\n");
}

export async function formatFailures(db: DbPool): Promise<string> {
  const rows = await failuresByCategory(db);
  if (rows.length === 0) return "";
  return ["failures by category:", ...rows.map((r) => `  ${r.category.padEnd(20)} ${String(r.files).padStart(8)}  e.g. ${r.exampleMessage ?? ""}`)].join("\n");
}

/** Seconds of recent history behind a link's current rate. */
export const LINK_RATE_WINDOW_SECONDS = 60;

export type LinkStatus = TransferLinkRate;

/** Succeeded transfers per link (source location → destination location), rates rounded for display. */
export async function readLinks(db: DbPool): Promise<LinkStatus[]> {
  return (await transferLinkRates(db, LINK_RATE_WINDOW_SECONDS)).map((l) => ({
    ...l,
    filesPerSec: round1(l.filesPerSec),
    bytesPerSec: Math.round(l.bytesPerSec),
    averageFilesPerSec: l.averageFilesPerSec === null ? null : round1(l.averageFilesPerSec),
    averageBytesPerSec: l.averageBytesPerSec === null ? null : Math.round(l.averageBytesPerSec),
  }));
}

export function formatLinks(links: readonly LinkStatus[]): string {
  if (links.length === 0) return "";
  return [
    `transfers by link (now: last ${LINK_RATE_WINDOW_SECONDS} s; avg: whole run):`,
    ...links.map(
      (l) =>
        `  ${l.source} → ${l.destination}  ${l.files.toLocaleString("en-US")} files, ${formatBytes(l.bytes)}` +
        `  now ${l.filesPerSec} files/s ${formatBytes(l.bytesPerSec)}/s` +
        `  avg ${l.averageFilesPerSec ?? "-"} files/s ${l.averageBytesPerSec === null ? "-" : `${formatBytes(l.averageBytesPerSec)}/s`}`,
    ),
  ].join("\n");
}

const round1 = (n: number) => Math.round(n * 10) / 10;

/** Live bars until the migration is done or the signal aborts. */
export async function watchStatus(db: DbPool, options: StatusOptions, signal: AbortSignal, intervalMs = 1_000): Promise<StatusSnapshot> {
  let snapshot = await readStatus(db, options);
  if (!process.stderr.isTTY) {
    // No terminal (CI, a log file): one line every few seconds instead of redrawn bars.
    let last = 0;
    while (!snapshot.done && !signal.aborted) {
      await sleep(intervalMs, signal);
      snapshot = await readStatus(db, options, { at: Date.now() - intervalMs, finished: snapshot.finished, rate: snapshot.rate });
      if (Date.now() - last >= 5_000) {
        last = Date.now();
        process.stderr.write(`${snapshot.finished}/${snapshot.sourceFiles} files, ${snapshot.files.FAIL} failed, ${snapshot.rate?.toFixed(0) ?? "-"} files/s\n`);
      }
    }
    return snapshot;
  }
  const multi = new MultiBar(
    { format: "{label} [{bar}] {percentage}% | {value}/{total} | {rate} | eta {eta_text}", stream: process.stderr, hideCursor: true, clearOnComplete: false, forceRedraw: true },
    Presets.shades_classic,
  );
  const files = multi.create(Math.max(snapshot.sourceFiles, 1), snapshot.finished, { label: "files ", rate: "-", eta_text: "-" });
  const ranges = multi.create(Math.max(totalRanges(snapshot), 1), snapshot.ranges.COMPLETE, { label: "ranges", rate: "", eta_text: "" });
  try {
    while (!snapshot.done && !signal.aborted) {
      await sleep(intervalMs, signal);
      snapshot = await readStatus(db, options, { at: Date.now() - intervalMs, finished: snapshot.finished, rate: snapshot.rate });
      files.setTotal(Math.max(snapshot.sourceFiles, 1));
      files.update(snapshot.finished, {
        rate: snapshot.rate === null ? "-" : `${snapshot.rate.toFixed(0)} files/s`,
        eta_text: snapshot.etaSeconds === null ? "-" : formatDuration(snapshot.etaSeconds),
      });
      ranges.setTotal(Math.max(totalRanges(snapshot), 1));
      ranges.update(snapshot.ranges.COMPLETE);
    }
  } finally {
    multi.stop();
  }
  return snapshot;
}

function totalRanges(s: StatusSnapshot): number {
  return s.ranges.PENDING + s.ranges.PROCESSING + s.ranges.COMPLETE;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "-";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}
