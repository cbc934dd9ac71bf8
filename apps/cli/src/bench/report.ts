import type { BookkeepingResult } from "./bookkeeping";
import type { CopyResults } from "./copyRounds";
import type { Say } from "./say";
import { round } from "./say";

/** PERFORMANCE.md's targets P1, P2 and P5 (the goals are 1.0× and 0.5×). */
export const TARGETS = { fleetVsRclone: 0.5, bookkeepingVsSql: 0.2, rssMb: 300 } as const;

export interface BenchResults {
  files: number;
  fileBytes: number;
  fleet: CopyResults["fleet"];
  fleetWriteVerify: CopyResults["fleetWriteVerify"];
  cp: CopyResults["cp"];
  rclone: CopyResults["rclone"];
  bookkeeping: BookkeepingResult | null;
  /** Why a measurement is missing (rclone not installed, skipped by an option). */
  skipped: Record<string, string>;
  settings: Record<string, string>;
}

export interface BenchReport extends Omit<BenchResults, "skipped" | "settings"> {
  peakWorkerRssMb: number | null;
  ratios: { fleetVsRclone: number | null; fleetWriteVerifyVsRclone: number | null; fleetVsCp: number | null; bookkeepingVsSql: number | null };
  targets: typeof TARGETS;
  /** null: not measured in this run. */
  met: { fleetVsRclone: boolean | null; bookkeepingVsSql: boolean | null; rssMb: boolean | null };
  skipped: Record<string, string>;
  settings: Record<string, string>;
}

export function buildReport(r: BenchResults): BenchReport {
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b ? round(a / b, 3) : null);
  const rssFigures = [r.fleet, r.fleetWriteVerify, r.bookkeeping].flatMap((m) => (m ? [m.peakWorkerRssMb] : []));
  const peakWorkerRssMb = rssFigures.length > 0 ? Math.max(...rssFigures) : null;
  const ratios = {
    fleetVsRclone: ratio(r.fleet?.filesPerSec, r.rclone?.filesPerSec),
    fleetWriteVerifyVsRclone: ratio(r.fleetWriteVerify?.filesPerSec, r.rclone?.filesPerSec),
    fleetVsCp: ratio(r.fleet?.filesPerSec, r.cp?.filesPerSec),
    bookkeepingVsSql: ratio(r.bookkeeping?.rowsPerSec, r.bookkeeping?.sqlRowsPerSec),
  };
  const atLeast = (value: number | null, target: number) => (value === null ? null : value >= target);
  return {
    files: r.files,
    fileBytes: r.fileBytes,
    fleet: r.fleet,
    fleetWriteVerify: r.fleetWriteVerify,
    cp: r.cp,
    rclone: r.rclone,
    bookkeeping: r.bookkeeping,
    peakWorkerRssMb,
    ratios,
    targets: TARGETS,
    met: {
      // A run with failed files does not count, however fast.
      fleetVsRclone: r.fleet && r.fleet.failed > 0 ? false : atLeast(ratios.fleetVsRclone, TARGETS.fleetVsRclone),
      bookkeepingVsSql: r.bookkeeping && r.bookkeeping.failed > 0 ? false : atLeast(ratios.bookkeepingVsSql, TARGETS.bookkeepingVsSql),
      rssMb: peakWorkerRssMb === null ? null : peakWorkerRssMb < TARGETS.rssMb,
    },
    skipped: r.skipped,
    settings: r.settings,
  };
}

export function sayReport(report: BenchReport, say: Say): void {
  const line = (label: string, m: { filesPerSec: number; mbPerSec: number; seconds: number; runsFilesPerSec: number[] } | null, extra = "") =>
    m &&
    say(
      `${label.padEnd(26)} ${String(m.filesPerSec).padStart(8)} files/s ${m.mbPerSec.toFixed(1).padStart(7)} MB/s ${m.seconds.toFixed(2).padStart(7)} s${extra}` +
        (m.runsFilesPerSec.length > 1 ? ` (runs: ${m.runsFilesPerSec.join(", ")})` : ""),
    );
  const rss = (mb: number) => `, worker peak RSS ${mb.toFixed(0)} MB`;
  say("");
  say(`results (${report.files} files of ${report.fileBytes} bytes; copies: best run of ${report.settings.rounds}):`);
  line("fleet, VERIFY=readback", report.fleet, report.fleet ? rss(report.fleet.peakWorkerRssMb) : "");
  line("fleet, VERIFY=write", report.fleetWriteVerify, report.fleetWriteVerify ? rss(report.fleetWriteVerify.peakWorkerRssMb) : "");
  line("cp -r", report.cp);
  line("rclone copy (16/16)", report.rclone);
  const b = report.bookkeeping;
  if (b) {
    say(`${"bookkeeping, 2 processes".padEnd(26)} ${String(b.rowsPerSec).padStart(8)} rows/s over ${b.rows} rows in ${b.seconds.toFixed(2)} s${rss(b.peakWorkerRssMb)}`);
    say(`${"INSERT … SELECT ceiling".padEnd(26)} ${String(b.sqlRowsPerSec).padStart(8)} rows/s`);
  }
  for (const [what, why] of Object.entries(report.skipped)) say(`${what.padEnd(26)} skipped: ${why}`);
  const verdict = (met: boolean | null) => (met === null ? "not measured" : met ? "met" : "MISSED");
  say(`P1 fleet vs rclone        ${report.ratios.fleetVsRclone ?? "-"}× (target ≥ ${TARGETS.fleetVsRclone}×, goal 1.0×): ${verdict(report.met.fleetVsRclone)}`);
  say(`P2 bookkeeping vs SQL     ${report.ratios.bookkeepingVsSql ?? "-"}× (target ≥ ${TARGETS.bookkeepingVsSql}×, goal 0.5×): ${verdict(report.met.bookkeepingVsSql)}`);
  say(`P5 worker peak RSS        ${report.peakWorkerRssMb?.toFixed(0) ?? "-"} MB (target < ${TARGETS.rssMb} MB): ${verdict(report.met.rssMb)}`);
}
