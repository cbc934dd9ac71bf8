import type { BookkeepingResult } from "./bookkeeping";
import type { CopyResults } from "./copyRounds";
import type { RemoteResults } from "./remoteRounds";
import type { ScanResults } from "./scanBench";
import type { ReferenceCopyResult } from "./cpCopy";
import type { BestOf } from "./copyRounds";
import type { RcloneCopyResult } from "./rcloneCopy";
import type { ScalingResults } from "./scalingSeries";
import type { RunnerResults } from "./runnerBench";
import type { IoSequenceResults } from "./ioRounds";
import type { Say } from "./say";
import { round } from "./say";

/** PERFORMANCE.md's targets P1–P5 (as issue 15 set them; the scan's is a goal of its own). */
export const TARGETS = { mixFleetVsRclone: 1.0, fleetVsRclone: 1.0, bookkeepingVsSql: 0.5, s3PackagedVsS3: 10, s3VsRcloneS3: 2, rssMb: 300, scanVsRcloneLsf: 0.5, runnerVsBullmq: 0.9, runnerHistoryVsBullmq: 0.5 } as const;

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
  /** P1b: cp, rclone and Fleet (VERIFY=readback) on the demo's tree (its generator and size mix). */
  mix: { files: number; bytes: number; cp: BestOf<ReferenceCopyResult> | null; rclone: BestOf<RcloneCopyResult> | null; fleet: CopyResults["fleet"]; fleetNoFsync: CopyResults["fleetNoFsync"] } | null;
  /** The null copier with 1, 2, 4, 8 worker processes on private servers, and what a file costs them. */
  scaling: ScalingResults | null;
  /** One long run (1M files by default) through null: or a local destination. */
  e2e: BookkeepingResult | null;
  /** P3/P3h: no-op jobs through the JobRunner without/with the history vs a raw BullMQ Worker (null: not measured). */
  runner: RunnerResults | null;
  /** Fleet's per-file system calls alone on the P1 tree, async and sync, with and without fsync (null: not measured). */
  io: IoSequenceResults | null;
  /** Why a measurement is missing (rclone not installed, skipped by an option). */
  skipped: Record<string, string>;
  settings: Record<string, string>;
}

export interface BenchReport extends Omit<BenchResults, "skipped" | "settings"> {
  /** The 1-minute load average (`uptime`) when the bench started and ended: figures on a loaded machine are depressed; ratios of one run still compare. */
  load?: { start: number; end: number; cores: number };
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
    /** The same on the demo-mix tree (P1b). */
    mixFsyncVsNoFsync: number | null;
    scanVsRcloneLsf: number | null;
    scanVsFind: number | null;
    rescanVsRcloneLsf: number | null;
    /** P1b: Fleet over rclone on the demo-mix tree. */
    mixFleetVsRclone: number | null;
    mixFleetVsCp: number | null;
    /** Scaling series: rows/s of the largest worker count over that of one worker. */
    scalingMaxVsOne: number | null;
    /** e2e: files/s of the last 10% over the first 10%. */
    e2eLastVsFirst: number | null;
    runnerVsBullmq: number | null;
    runnerHistoryVsBullmq: number | null;
    /** Fleet (readback) over its own system calls alone, made the way it makes them (async + fsync): 1 = the pipeline costs nothing on top. */
    fleetVsIoSequence: number | null;
  };
  targets: typeof TARGETS;
  /** null: not measured in this run. */
  met: { mixFleetVsRclone: boolean | null; fleetVsRclone: boolean | null; bookkeepingVsSql: boolean | null; s3PackagedVsS3: boolean | null; s3VsRcloneS3: boolean | null; rssMb: boolean | null; scanVsRcloneLsf: boolean | null; runnerVsBullmq: boolean | null; runnerHistoryVsBullmq: boolean | null };
  skipped: Record<string, string>;
  settings: Record<string, string>;
}

export function buildReport(r: BenchResults): BenchReport {
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b ? round(a / b, 3) : null);
  const rssFigures = [r.fleet, r.fleetWriteVerify, r.bookkeeping, r.s3, r.s3ReadBack, r.s3Packaged, r.sftp, r.mix?.fleet ?? null, r.e2e].flatMap((m) => (m ? [m.peakWorkerRssMb] : []));
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
    mixFsyncVsNoFsync: ratio(r.mix?.fleet?.filesPerSec, r.mix?.fleetNoFsync?.filesPerSec),
    scanVsRcloneLsf: ratio(r.scan?.fleet.filesPerSec, r.scan?.rcloneLsf?.filesPerSec),
    scanVsFind: ratio(r.scan?.fleet.filesPerSec, r.scan?.find.filesPerSec),
    rescanVsRcloneLsf: ratio(r.scan?.fleetRescan.filesPerSec, r.scan?.rcloneLsf?.filesPerSec),
    mixFleetVsRclone: ratio(r.mix?.fleet?.filesPerSec, r.mix?.rclone?.filesPerSec),
    mixFleetVsCp: ratio(r.mix?.fleet?.filesPerSec, r.mix?.cp?.filesPerSec),
    scalingMaxVsOne: ratio(r.scaling?.runs.at(-1)?.rowsPerSec, r.scaling?.runs[0]?.rowsPerSec),
    e2eLastVsFirst: r.e2e?.throughput.lastVsFirst ?? null,
    runnerVsBullmq: ratio(r.runner?.fleet.jobsPerSec, r.runner?.raw.jobsPerSec),
    runnerHistoryVsBullmq: ratio(r.runner?.fleetHistory.jobsPerSec, r.runner?.raw.jobsPerSec),
    fleetVsIoSequence: ratio(r.fleet?.filesPerSec, r.io?.asyncFsync?.filesPerSec),
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
    mix: r.mix,
    scaling: r.scaling,
    e2e: r.e2e,
    runner: r.runner,
    io: r.io,
    peakWorkerRssMb,
    ratios,
    targets: TARGETS,
    met: {
      mixFleetVsRclone: r.mix?.fleet && r.mix.fleet.failed > 0 ? false : atLeast(ratios.mixFleetVsRclone, TARGETS.mixFleetVsRclone),
      fleetVsRclone: clean(r.fleet) ? atLeast(ratios.fleetVsRclone, TARGETS.fleetVsRclone) : false,
      bookkeepingVsSql: clean(r.bookkeeping) ? atLeast(ratios.bookkeepingVsSql, TARGETS.bookkeepingVsSql) : false,
      s3PackagedVsS3: clean(r.s3Packaged) && clean(r.s3) ? atLeast(ratios.s3PackagedVsS3, TARGETS.s3PackagedVsS3) : false,
      s3VsRcloneS3: clean(r.s3) ? atLeast(ratios.s3VsRcloneS3, TARGETS.s3VsRcloneS3) : false,
      rssMb: peakWorkerRssMb === null ? null : peakWorkerRssMb < TARGETS.rssMb,
      scanVsRcloneLsf: atLeast(ratios.scanVsRcloneLsf, TARGETS.scanVsRcloneLsf),
      runnerVsBullmq: atLeast(ratios.runnerVsBullmq, TARGETS.runnerVsBullmq),
      runnerHistoryVsBullmq: atLeast(ratios.runnerHistoryVsBullmq, TARGETS.runnerHistoryVsBullmq),
    },
    skipped: r.skipped,
    settings: r.settings,
  };
}

export function sayReport(report: BenchReport, say: Say): void {
  const line = (label: string, m: { filesPerSec: number; mbPerSec: number; seconds: number; runsFilesPerSec: number[]; cpuUsPerFile?: number } | null, extra = "") =>
    m &&
    say(
      `${label.padEnd(26)} ${String(m.filesPerSec).padStart(8)} files/s ${m.mbPerSec.toFixed(1).padStart(7)} MB/s ${m.seconds.toFixed(2).padStart(7)} s` +
        (m.cpuUsPerFile !== undefined ? ` ${String(m.cpuUsPerFile).padStart(5)} µs CPU/file` : "") +
        extra +
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
  if (report.io) {
    // Fleet's own system calls with nothing around them: the floor of its way of copying here.
    line("io sequence async+fsync", report.io.asyncFsync);
    line("io sequence sync+fsync", report.io.syncFsync);
    line("io sequence async", report.io.asyncNoFsync);
    line("io sequence sync", report.io.syncNoFsync);
    line("io sequence 4 threads+fsync", report.io.threadsFsync);
    line("io sequence 4 threads", report.io.threadsNoFsync);
  }
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
  const rn = report.runner;
  if (rn) {
    say(`runner (${rn.jobs} no-op jobs, concurrency ${rn.concurrency}, one process; best round, 1-min load when it ended):`);
    const jl = (label: string, f: { jobsPerSec: number; seconds: number; load1: number }) => say(`${label.padEnd(26)} ${String(f.jobsPerSec).padStart(8)} jobs/s ${f.seconds.toFixed(2).padStart(7)} s, load ${f.load1}`);
    jl("raw BullMQ Worker", rn.raw);
    jl("fleet JobRunner", rn.fleet);
    jl("fleet JobRunner + history", rn.fleetHistory);
    say(`${"".padEnd(26)} rounds [raw, fleet, +history]: ${rn.rounds.map((r) => `[${r.join(", ")}]`).join(" ")}`);
  }
  for (const [what, why] of Object.entries(report.skipped)) say(`${what.padEnd(26)} skipped: ${why}`);
  const verdict = (met: boolean | null) => (met === null ? "not measured" : met ? "met" : "MISSED");
  say(`P1 fleet vs rclone        ${report.ratios.fleetVsRclone ?? "-"}× (target ≥ ${TARGETS.fleetVsRclone}×): ${verdict(report.met.fleetVsRclone)}`);
  if (report.mix) {
    const m = report.mix;
    say(`P1b the demo's size mix (${m.files} files, ${(m.bytes / 1_048_576).toFixed(0)} MiB):`);
    line("fleet, VERIFY=readback", m.fleet, m.fleet ? rss(m.fleet.peakWorkerRssMb) : "");
    if (m.fleetNoFsync) line("fleet, FSYNC_WRITES=false", m.fleetNoFsync);
    line("cp -r", m.cp);
    line("rclone copy (16/16)", m.rclone);
  }
  if (report.scaling) {
    const sc = report.scaling;
    say(`scaling series (null copier, ${sc.rows} rows, private PostgreSQL and Redis; INSERT … SELECT ${sc.sqlRowsPerSec} rows/s):`);
    for (const run of sc.runs) {
      say(`  ${String(run.workers).padStart(2)} workers ${String(run.rowsPerSec).padStart(8)} rows/s, PostgreSQL ${run.pgCpuUsPerFile ?? "-"} µs CPU/file, Redis ${run.redisCpuUsPerFile} µs CPU/file, ${run.cost.statementsPerFile ?? "-"} statements/file, ${run.cost.walBytesPerFile} WAL bytes/file, ${run.cost.redisCommandsPerRange} Redis commands/range`);
    }
  }
  if (report.e2e) {
    const e = report.e2e;
    say(`end to end (${e.rows} files → ${e.destination}, VERIFY=${e.verify}): ${e.rowsPerSec} files/s; first 10% ${e.throughput.first10PctFilesPerSec ?? "-"}, last 10% ${e.throughput.last10PctFilesPerSec ?? "-"} files/s; peak RSS per worker ${e.peakRssPerWorkerMb.join(", ")} MB`);
  }
  say(`P1b mix fleet vs rclone   ${report.ratios.mixFleetVsRclone ?? "-"}× (target ≥ ${TARGETS.mixFleetVsRclone}×): ${verdict(report.met.mixFleetVsRclone)}; vs cp ${report.ratios.mixFleetVsCp ?? "-"}×`);
  say(`P2 bookkeeping vs SQL     ${report.ratios.bookkeepingVsSql ?? "-"}× (target ≥ ${TARGETS.bookkeepingVsSql}×): ${verdict(report.met.bookkeepingVsSql)}`);
  say(`P4 S3 packaged vs object  ${report.ratios.s3PackagedVsS3 ?? "-"}× (target ≥ ${TARGETS.s3PackagedVsS3}×): ${verdict(report.met.s3PackagedVsS3)}`);
  say(`P4 S3 object vs rclone    ${report.ratios.s3VsRcloneS3 ?? "-"}× (target ≥ ${TARGETS.s3VsRcloneS3}×; VERIFY=write): ${verdict(report.met.s3VsRcloneS3)}`);
  say(`   S3 readback vs rclone  ${report.ratios.s3ReadBackVsRcloneS3 ?? "-"}× (VERIFY=readback downloads every object again; no target)`);
  say(`   SFTP vs rclone         ${report.ratios.sftpVsRcloneSftp ?? "-"}× (no target)`);
  say(`   fsync vs no fsync      ${report.ratios.fsyncVsNoFsync ?? "-"}× (files/s with FSYNC_WRITES=true over false, same tree; 1 = free); demo mix ${report.ratios.mixFsyncVsNoFsync ?? "-"}×`);
  say(`   fleet vs its syscalls  ${report.ratios.fleetVsIoSequence ?? "-"}× (P1 over the io sequence alone, async + fsync; 1 = the pipeline costs nothing on top)`);
  say(`P3 runner vs BullMQ       ${report.ratios.runnerVsBullmq ?? "-"}× (target ≥ ${TARGETS.runnerVsBullmq}×): ${verdict(report.met.runnerVsBullmq)}`);
  say(`P3h runner+history vs BullMQ ${report.ratios.runnerHistoryVsBullmq ?? "-"}× (target ≥ ${TARGETS.runnerHistoryVsBullmq}×): ${verdict(report.met.runnerHistoryVsBullmq)}`);
  say(`P5 worker peak RSS        ${report.peakWorkerRssMb?.toFixed(0) ?? "-"} MB (target < ${TARGETS.rssMb} MB): ${verdict(report.met.rssMb)}`);
  say(`scan vs rclone lsf -R     ${report.ratios.scanVsRcloneLsf ?? "-"}× (goal ≥ ${TARGETS.scanVsRcloneLsf}×): ${verdict(report.met.scanVsRcloneLsf)}; vs find ${report.ratios.scanVsFind ?? "-"}×; re-scan vs rclone ${report.ratios.rescanVsRcloneLsf ?? "-"}×`);
}
