import type { BookkeepingResult } from "./bookkeeping";
import type { CopyResults } from "./copyRounds";
import type { RemoteResults } from "./remoteRounds";
import type { ScanResults } from "./scanBench";
import type { Say } from "./say";
import { round } from "./say";

/** PERFORMANCE.md's targets P1, P2, P4 and P5 (the goals of P1 and P2 are 1.0× and 0.5×). */
export const TARGETS = { fleetVsRclone: 0.5, bookkeepingVsSql: 0.2, s3PackagedVsS3: 10, s3VsRcloneS3: 1.5, rssMb: 300, scanVsRcloneLsf: 0.5 } as const;

export interface BenchResults {
  files: number;
  fileBytes: number;
  fleet: CopyResults["fleet"];
  fleetWriteVerify: CopyResults["fleetWriteVerify"];
  fleetNoFsync: CopyResults["fleetNoFsync"];
  cp: CopyResults["cp"];
  rclone: CopyResults["rclone"];
  bookkeeping: BookkeepingResult | null;
  /** Files in the tree of the S3/SFTP measurements (null: none made). */
  remoteFiles: number | null;
  s3: RemoteResults["s3"];
  s3ReadBack: RemoteResults["s3ReadBack"];
  s3Packaged: RemoteResults["s3Packaged"];
  rcloneS3: RemoteResults["rcloneS3"];
  sftp: RemoteResults["sftp"];
  rcloneSftp: RemoteResults["rcloneSftp"];
  /** `fleet inventory scan` vs `rclone lsf -R` and `find -printf` (null: not measured). */
  scan: ScanResults | null;
  /** Why a measurement is missing (rclone not installed, skipped by an option). */
  skipped: Record<string, string>;
  settings: Record<string, string>;
}

export interface BenchReport extends Omit<BenchResults, "skipped" | "settings"> {
  peakWorkerRssMb: number | null;
  ratios: {
    fleetVsRclone: number | null;
    fleetWriteVerifyVsRclone: number | null;
    fleetVsCp: number | null;
    bookkeepingVsSql: number | null;
    s3VsRcloneS3: number | null;
    s3ReadBackVsRcloneS3: number | null;
    s3PackagedVsS3: number | null;
    sftpVsRcloneSftp: number | null;
    /** fleet (fsync before publishing, the default) over fleet with FSYNC_WRITES=false: 1 means free. */
    fsyncVsNoFsync: number | null;
    scanVsRcloneLsf: number | null;
    scanVsFind: number | null;
    rescanVsRcloneLsf: number | null;
  };
  targets: typeof TARGETS;
  /** null: not measured in this run. */
  met: { fleetVsRclone: boolean | null; bookkeepingVsSql: boolean | null; s3PackagedVsS3: boolean | null; s3VsRcloneS3: boolean | null; rssMb: boolean | null; scanVsRcloneLsf: boolean | null };
  skipped: Record<string, string>;
  settings: Record<string, string>;
}

export function buildReport(r: BenchResults): BenchReport {
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b ? round(a / b, 3) : null);
  const rssFigures = [r.fleet, r.fleetWriteVerify, r.bookkeeping, r.s3, r.s3ReadBack, r.s3Packaged, r.sftp].flatMap((m) => (m ? [m.peakWorkerRssMb] : []));
  const peakWorkerRssMb = rssFigures.length > 0 ? Math.max(...rssFigures) : null;
  const ratios = {
    fleetVsRclone: ratio(r.fleet?.filesPerSec, r.rclone?.filesPerSec),
    fleetWriteVerifyVsRclone: ratio(r.fleetWriteVerify?.filesPerSec, r.rclone?.filesPerSec),
    fleetVsCp: ratio(r.fleet?.filesPerSec, r.cp?.filesPerSec),
    bookkeepingVsSql: ratio(r.bookkeeping?.rowsPerSec, r.bookkeeping?.sqlRowsPerSec),
    s3VsRcloneS3: ratio(r.s3?.filesPerSec, r.rcloneS3?.filesPerSec),
    s3ReadBackVsRcloneS3: ratio(r.s3ReadBack?.filesPerSec, r.rcloneS3?.filesPerSec),
    s3PackagedVsS3: ratio(r.s3Packaged?.filesPerSec, r.s3?.filesPerSec),
    sftpVsRcloneSftp: ratio(r.sftp?.filesPerSec, r.rcloneSftp?.filesPerSec),
    fsyncVsNoFsync: ratio(r.fleet?.filesPerSec, r.fleetNoFsync?.filesPerSec),
    scanVsRcloneLsf: ratio(r.scan?.fleet.filesPerSec, r.scan?.rcloneLsf?.filesPerSec),
    scanVsFind: ratio(r.scan?.fleet.filesPerSec, r.scan?.find.filesPerSec),
    rescanVsRcloneLsf: ratio(r.scan?.fleetRescan.filesPerSec, r.scan?.rcloneLsf?.filesPerSec),
  };
  // A run with failed files does not count, however fast.
  const clean = (m: { failed: number } | null) => m === null || m.failed === 0;
  const atLeast = (value: number | null, target: number) => (value === null ? null : value >= target);
  return {
    files: r.files,
    fileBytes: r.fileBytes,
    fleet: r.fleet,
    fleetWriteVerify: r.fleetWriteVerify,
    fleetNoFsync: r.fleetNoFsync,
    cp: r.cp,
    rclone: r.rclone,
    bookkeeping: r.bookkeeping,
    remoteFiles: r.remoteFiles,
    s3: r.s3,
    s3ReadBack: r.s3ReadBack,
    s3Packaged: r.s3Packaged,
    rcloneS3: r.rcloneS3,
    sftp: r.sftp,
    rcloneSftp: r.rcloneSftp,
    scan: r.scan,
    peakWorkerRssMb,
    ratios,
    targets: TARGETS,
    met: {
      fleetVsRclone: clean(r.fleet) ? atLeast(ratios.fleetVsRclone, TARGETS.fleetVsRclone) : false,
      bookkeepingVsSql: clean(r.bookkeeping) ? atLeast(ratios.bookkeepingVsSql, TARGETS.bookkeepingVsSql) : false,
      s3PackagedVsS3: clean(r.s3Packaged) && clean(r.s3) ? atLeast(ratios.s3PackagedVsS3, TARGETS.s3PackagedVsS3) : false,
      s3VsRcloneS3: clean(r.s3) ? atLeast(ratios.s3VsRcloneS3, TARGETS.s3VsRcloneS3) : false,
      rssMb: peakWorkerRssMb === null ? null : peakWorkerRssMb < TARGETS.rssMb,
      scanVsRcloneLsf: atLeast(ratios.scanVsRcloneLsf, TARGETS.scanVsRcloneLsf),
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
  say(`results (copies: best run of ${report.settings.rounds}):`);
  if (report.fleet || report.fleetWriteVerify || report.cp || report.rclone) say(`local → local (${report.files} files of ${report.fileBytes} bytes):`);
  line("fleet, VERIFY=readback", report.fleet, report.fleet ? rss(report.fleet.peakWorkerRssMb) : "");
  line("fleet, VERIFY=write", report.fleetWriteVerify, report.fleetWriteVerify ? rss(report.fleetWriteVerify.peakWorkerRssMb) : "");
  line("fleet, FSYNC_WRITES=false", report.fleetNoFsync);
  line("cp -r", report.cp);
  line("rclone copy (16/16)", report.rclone);
  const b = report.bookkeeping;
  if (b) {
    say(`${"bookkeeping, 2 processes".padEnd(26)} ${String(b.rowsPerSec).padStart(8)} rows/s over ${b.rows} rows in ${b.seconds.toFixed(2)} s${rss(b.peakWorkerRssMb)}`);
    say(`${"INSERT … SELECT ceiling".padEnd(26)} ${String(b.sqlRowsPerSec).padStart(8)} rows/s`);
  }
  if (report.remoteFiles !== null) {
    say(`to servers on this machine (${report.remoteFiles} files of ${report.fileBytes} bytes; s3rver, OpenSSH sshd):`);
    line("fleet → S3, per object", report.s3, report.s3 ? rss(report.s3.peakWorkerRssMb) : "");
    line("fleet → S3, readback", report.s3ReadBack, report.s3ReadBack ? rss(report.s3ReadBack.peakWorkerRssMb) : "");
    line("fleet → S3, packaged", report.s3Packaged, report.s3Packaged ? rss(report.s3Packaged.peakWorkerRssMb) : "");
    line("rclone → S3 (16/16)", report.rcloneS3);
    line("fleet → SFTP, per object", report.sftp, report.sftp ? rss(report.sftp.peakWorkerRssMb) : "");
    line("rclone → SFTP (16/16)", report.rcloneSftp);
  }
  if (report.scan) {
    const sc = report.scan;
    say(`inventory scan (${sc.files} files, local; fleet = the compiled CLI, start to exit, rows written):`);
    line("fleet inventory scan", { ...sc.fleet, mbPerSec: 0 }, ` (scan itself ${sc.fleetScanSecondsInside.toFixed(2)} s)`);
    line("fleet re-scan, unchanged", { ...sc.fleetRescan, mbPerSec: 0 });
    line("rclone lsf -R (p,s,t)", sc.rcloneLsf ? { ...sc.rcloneLsf, mbPerSec: 0 } : null);
    line("find -printf", { ...sc.find, mbPerSec: 0 });
  }
  for (const [what, why] of Object.entries(report.skipped)) say(`${what.padEnd(26)} skipped: ${why}`);
  const verdict = (met: boolean | null) => (met === null ? "not measured" : met ? "met" : "MISSED");
  say(`P1 fleet vs rclone        ${report.ratios.fleetVsRclone ?? "-"}× (target ≥ ${TARGETS.fleetVsRclone}×, goal 1.0×): ${verdict(report.met.fleetVsRclone)}`);
  say(`P2 bookkeeping vs SQL     ${report.ratios.bookkeepingVsSql ?? "-"}× (target ≥ ${TARGETS.bookkeepingVsSql}×, goal 0.5×): ${verdict(report.met.bookkeepingVsSql)}`);
  say(`P4 S3 packaged vs object  ${report.ratios.s3PackagedVsS3 ?? "-"}× (target ≥ ${TARGETS.s3PackagedVsS3}×): ${verdict(report.met.s3PackagedVsS3)}`);
  say(`P4 S3 object vs rclone    ${report.ratios.s3VsRcloneS3 ?? "-"}× (target ≥ ${TARGETS.s3VsRcloneS3}×; VERIFY=write): ${verdict(report.met.s3VsRcloneS3)}`);
  say(`   S3 readback vs rclone  ${report.ratios.s3ReadBackVsRcloneS3 ?? "-"}× (VERIFY=readback downloads every object again; no target)`);
  say(`   SFTP vs rclone         ${report.ratios.sftpVsRcloneSftp ?? "-"}× (no target)`);
  say(`   fsync vs no fsync      ${report.ratios.fsyncVsNoFsync ?? "-"}× (files/s with FSYNC_WRITES=true over false, same tree; 1 = free)`);
  say(`P5 worker peak RSS        ${report.peakWorkerRssMb?.toFixed(0) ?? "-"} MB (target < ${TARGETS.rssMb} MB): ${verdict(report.met.rssMb)}`);
  say(`scan vs rclone lsf -R     ${report.ratios.scanVsRcloneLsf ?? "-"}× (goal ≥ ${TARGETS.scanVsRcloneLsf}×): ${verdict(report.met.scanVsRcloneLsf)}; vs find ${report.ratios.scanVsFind ?? "-"}×; re-scan vs rclone ${report.ratios.rescanVsRcloneLsf ?? "-"}×`);
}
