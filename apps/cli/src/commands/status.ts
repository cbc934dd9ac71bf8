import { MultiBar, Presets } from "cli-progress";
import { ReportedFailure } from "../cliRun";
import { failureSummary } from "@fleet/db/sql/failures";
import type { FailureCategorySummary } from "@fleet/db/sql/failures";
import { transferLinkCounts } from "@fleet/db/sql/reports";
import { namedLink } from "@fleet/jobs/migration/transferLabels";
import { migrationBlockerSources } from "@fleet/jobs/status/blockers";
import { describeBlocker, formatFilesPerSec, linkRates } from "@fleet/jobs/status/migrationNumbers";
import type { LinkRates, MigrationNumbers, Rate } from "@fleet/jobs/status/migrationNumbers";
import { liveMigrationWindow, readMigrationStatus } from "@fleet/jobs/status/readMigrationStatus";
import { QUEUES } from "@fleet/jobs/contracts";
import type { FleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import { LinkBreakers } from "@fleet/core/linkBreakers";
import type { CliConfig } from "../config";
import { formatBreakers, readBreakers } from "./breakers";
import { formatDuration } from "./durations";
import type { BreakerStatus } from "./breakers";

/**
 * What `fleet migrate status` shows, text or --json (the JSON carries everything the text
 * does). The numbers come from migrationNumbers(), the one function the dashboard and the
 * metrics use too.
 */
export interface StatusReport {
  numbers: MigrationNumbers;
  /** Something could not be read (Redis down: whether the queue is paused is unknown). */
  warnings: string[];
  /** Succeeded transfers per link, with rates that mean what the run's mean (linkRates), and failed files per link with their rate. */
  links: LinkRates[];
  failures: FailureCategorySummary[];
  /** Every link's breaker (open ones first), or why they could not be read. */
  breakers: BreakerStatus["breakers"];
  breakersError?: string;
}

export async function readStatusReport(runtime: FleetRuntime, config: CliConfig): Promise<StatusReport> {
  const policy = { maxRetries: config.RETRY_MAX, retryableCategories: config.RETRY_CATEGORIES };
  const breakers = new LinkBreakers(runtime.redis, runtime.prefix);
  const blockers = migrationBlockerSources({ migrationQueue: runtime.deps.jobs.queue(QUEUES.migration), window: liveMigrationWindow(runtime.db, config), breakers });
  const [[status, links], failures, breakerStatus] = await Promise.all([
    // The links of the run the numbers are about.
    readMigrationStatus(runtime.db, { ...policy, blockers }).then(async (read) => [read, await transferLinkCounts(runtime.db, read.progress.runStartedAt, [namedLink(runtime.deps.source, runtime.deps.destination)])] as const),
    failureSummary(runtime.db, {}, policy),
    readBreakers(runtime.redis, config.REDIS_URL, runtime.prefix),
  ]);
  return { numbers: status.numbers, warnings: status.warnings, links: linkRates(links, status.numbers), failures, ...breakerStatus };
}

export function formatStatus(r: StatusReport): string {
  const n = r.numbers;
  const extra = [n.vanished > 0 ? `${num(n.vanished)} vanished before migration` : "", n.superseded > 0 ? `${num(n.superseded)} old versions` : ""].filter(Boolean);
  const lines = [
    `state          ${stateText(n)}`,
    `source files   ${num(n.total.files)} (${formatBytes(n.total.bytes)})${extra.length ? `; not counted: ${extra.join(", ")}` : ""}`,
    `ranges         pending ${n.ranges.PENDING}  processing ${n.ranges.PROCESSING}  complete ${n.ranges.COMPLETE}`,
    `files          ${num(n.done)}/${num(n.total.files)} done (${n.percent.toFixed(1)}%): success ${num(n.succeeded)}  failed ${num(n.failed)} (final ${num(n.failedFinal)}, retried later ${num(Math.max(n.failed - n.failedFinal - n.retryRequested, 0))}, retry requested ${num(n.retryRequested)})  retrying ${num(n.retrying)}  killed ${num(n.killed)}`,
    `migrated       ${formatBytes(n.bytesMigrated)}`,
    `rate           ${rateText(n)}`,
    `elapsed        ${n.elapsedSeconds === null ? "-" : formatDuration(n.elapsedSeconds)}  eta ${etaText(n)}`,
    ...n.blockers.map((b) => `held           ${describeBlocker(b)}`),
    ...r.warnings.map((w) => `warning        ${w}`),
  ];
  const links = formatLinks(r.links);
  if (links) lines.push(links);
  const breakers = formatBreakers(r.breakers === null ? { breakers: null, breakersError: r.breakersError ?? "unknown" } : { breakers: r.breakers });
  if (breakers) lines.push(breakers);
  const failures = formatFailures(r.failures);
  if (failures) lines.push(failures);
  return lines.join("\n");
}

function stateText(n: MigrationNumbers): string {
  if (n.state === "blocked") return `blocked (${n.blockers.map((b) => b.kind).join(", ")}): no ETA while held`;
  if (n.state === "done") return n.failed > 0 ? `done, with ${num(n.failed)} failed files (fleet migrate failures)` : "done";
  if (n.state === "stalled") return "stalled: nothing finished in the last minute (are workers running? fleet queues)";
  return n.state;
}

/** "now 1,234 files/s 5.0 MiB/s  avg …": the run's rates, or a link's (the same two, linkRates). */
export function rateText(n: { rate: { lastMinute: Rate | null; run: Rate | null } }): string {
  const r = (x: Rate | null) => (x === null ? "-" : `${fmtRate(x.filesPerSec)} files/s ${formatBytes(x.bytesPerSec)}/s`);
  return `now ${r(n.rate.lastMinute)}  avg ${r(n.rate.run)}`;
}

export function etaText(n: MigrationNumbers): string {
  if (n.state === "blocked") return `- (${n.blockers.map(describeBlocker).join("; ")})`;
  if (n.state === "done") return "done";
  return n.etaSeconds === null ? "-" : formatDuration(n.etaSeconds);
}

export function formatFailures(rows: readonly FailureCategorySummary[]): string {
  if (rows.length === 0) return "";
  return [
    "failures by category (fleet migrate failures --category C for the files):",
    ...rows.map(
      (r) =>
        `  ${r.category.padEnd(18)} ${String(r.files).padStart(8)}  ${r.retryable ? "retryable" : "permanent"}` +
        `${r.retrying ? `, ${r.retrying} retrying` : ""}${r.killed ? `, ${r.killed} killed` : ""}  e.g. ${r.example.path}: ${r.example.message ?? ""}`,
    ),
  ].join("\n");
}

export function formatLinks(links: readonly LinkRates[]): string {
  if (links.length === 0) return "";
  return [
    "transfers by link (succeeded; rates as the run's: now over the last minute, avg over the whole run; failed: files whose last attempt failed):",
    ...links.map((l) => `  ${l.source} → ${l.destination}  ${num(l.files)} files, ${formatBytes(l.bytes)}  ${rateText(l)}${failedText(l)}`),
  ].join("\n");
}

/** "  failed 1,234 files: now 12 files/s  avg 3.4 files/s", beside a link's rates; "" when none failed. */
function failedText(l: LinkRates): string {
  if (l.failedFiles === 0) return "";
  const r = (x: number | null) => (x === null ? "-" : `${fmtRate(x)} files/s`);
  return `  failed ${num(l.failedFiles)} files: now ${r(l.failedRate.lastMinute)}  avg ${r(l.failedRate.run)}`;
}

const num = (n: number) => n.toLocaleString("en-US");

export const fmtRate = formatFilesPerSec;

/**
 * Live bars (or, without a terminal, a line every few seconds) until the migration is done or
 * the signal aborts. Failed and retrying counts, bytes/s, elapsed and the ETA — or, while
 * held, why — on every redraw.
 *
 * A reading scans the succeeded outcomes for the configured link's transfers (the rest comes
 * from the kept counts; about half a second at 1M files): between two, the watch waits
 * at least three times the last one's duration, so a watcher keeps the database busy a quarter
 * of the time at most, however large the migration (with a fixed second between readings, a
 * watch of a 10M-file migration read back to back).
 */
export async function watchStatus(readReport: () => Promise<StatusReport>, signal: AbortSignal, intervalMs = 1_000): Promise<StatusReport> {
  // Ctrl-C before the first report: nothing to show, exit 130.
  const firstStarted = performance.now();
  let report = await new Promise<StatusReport>((resolve, reject) => {
    const onAbort = () => reject(new ReportedFailure(130));
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    readReport().then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
  // Ctrl-C ends the watch also while a read waits (Redis or PostgreSQL gone mid-watch): the
  // last report stands (found by a new operator's walkthrough: Ctrl-C was ignored for good).
  let readMs = performance.now() - firstStarted;
  const read = (): Promise<StatusReport> => {
    if (signal.aborted) return Promise.resolve(report);
    const last = report;
    const started = performance.now();
    return new Promise<StatusReport>((resolve, reject) => {
      const onAbort = () => resolve(last);
      signal.addEventListener("abort", onAbort, { once: true });
      readReport()
        .then((r) => {
          readMs = performance.now() - started;
          resolve(r);
        }, reject)
        .finally(() => signal.removeEventListener("abort", onAbort));
    });
  };
  // At most 30 s: one reading that hung on a Redis or PostgreSQL hiccup must not freeze the view.
  const pause = () => sleep(Math.max(intervalMs, Math.min(3 * readMs, 30_000)), signal);
  if (!process.stderr.isTTY) {
    let last = 0;
    for (;;) {
      if (Date.now() - last >= 5_000 || report.numbers.state === "done") {
        last = Date.now();
        process.stderr.write(`${watchLine(report.numbers)}\n`);
      }
      if (report.numbers.state === "done" || signal.aborted) return report;
      await pause();
      report = await read();
    }
  }
  const multi = new MultiBar(
    {
      format: "{label} [{bar}] {percentage}% | {value}/{total} | failed {failed} retrying {retrying} | {rate} | elapsed {elapsed} | eta {eta_text}",
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: false,
      forceRedraw: true,
    },
    Presets.shades_classic,
  );
  const n0 = report.numbers;
  const files = multi.create(Math.max(n0.total.files, 1), n0.done, { label: "files ", ...barFields(n0) });
  // Its own format: the files bar's, fed empty fields, drew "failed  retrying  |  | elapsed  | eta"
  // (found by a new operator's walkthrough).
  const ranges = multi.create(Math.max(totalRanges(n0), 1), n0.ranges.COMPLETE, { label: "ranges" }, { format: RANGES_BAR });
  try {
    while (report.numbers.state !== "done" && !signal.aborted) {
      await pause();
      report = await read();
      const n = report.numbers;
      files.setTotal(Math.max(n.total.files, 1));
      files.update(n.done, barFields(n));
      ranges.setTotal(Math.max(totalRanges(n), 1));
      ranges.update(n.ranges.COMPLETE);
    }
  } finally {
    multi.stop();
  }
  return report;
}

/** The ranges bar under the files bar: the counts only (failures, rates and the ETA are the files'). */
export const RANGES_BAR = "{label} [{bar}] {percentage}% | {value}/{total} complete";

function barFields(n: MigrationNumbers): Record<string, string> {
  const now = n.rate.lastMinute;
  return {
    failed: num(n.failed),
    retrying: num(n.retrying),
    rate: now === null ? "-" : `${fmtRate(now.filesPerSec)} files/s ${formatBytes(now.bytesPerSec)}/s`,
    elapsed: n.elapsedSeconds === null ? "-" : formatDuration(n.elapsedSeconds),
    eta_text: etaText(n),
  };
}

function watchLine(n: MigrationNumbers): string {
  const f = barFields(n);
  return `${num(n.done)}/${num(n.total.files)} files (${n.percent.toFixed(1)}%), ${f.failed} failed, ${f.retrying} retrying, ${f.rate}, elapsed ${f.elapsed}, eta ${f.eta_text}`;
}

function totalRanges(n: MigrationNumbers): number {
  return n.ranges.PENDING + n.ranges.PROCESSING + n.ranges.COMPLETE;
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

