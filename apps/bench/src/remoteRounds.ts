import { migrationFields } from "@fleet/jobs/settings";
import type { Storage } from "@fleet/storage/storage";
import type { BenchState } from "./benchState";
import { bestOf, bestOfFleet } from "./copyRounds";
import type { BestOf } from "./copyRounds";
import type { DestinationTrees } from "./destinationTrees";
import { measureFleetCopy, spotCheck } from "./fleetCopy";
import type { FleetCopyResult, FleetDestination } from "./fleetCopy";
import { RCLONE_INSTALL_HINT, measureRcloneTo, rcloneVersion } from "./rcloneCopy";
import type { RcloneCopyResult } from "./rcloneCopy";
import { startS3Endpoint, startSftpEndpoint } from "./remoteEndpoints";
import { SSHD_INSTALL_HINT, sshdInstalled } from "@fleet/testing/sshServer";
import type { RemoteEndpoint, RemoteTarget } from "./remoteEndpoints";
import type { SourceTree } from "./sourceTree";

/**
 * Local → S3 and local → SFTP (PERFORMANCE.md P4): Fleet per object, Fleet packaged (tar
 * packages + manifest per range), and rclone to the same server, over `rounds` interleaved
 * rounds like the local copies. The servers run on this machine, so their CPU competes with
 * the copiers': ratios measured in one run are what compare.
 *
 * Fleet runs with VERIFY=write here, the counterpart of what rclone checks (size, and the
 * server's MD5 ETag against its own): every object is still verified by size and sha256 (a
 * PUT's ETag is the MD5 of what the server stored, and the sha256 travels in its metadata).
 * "s3-readback" adds VERIFY=readback, which downloads every object again.
 */
export const REMOTE_MEASUREMENTS = ["s3", "s3-readback", "s3-packaged", "rclone-s3", "sftp", "rclone-sftp"] as const;
export type RemoteMeasurement = (typeof REMOTE_MEASUREMENTS)[number];

export interface RemoteResults {
  s3: BestOf<FleetCopyResult> | null;
  s3ReadBack: BestOf<FleetCopyResult> | null;
  s3Packaged: BestOf<FleetCopyResult> | null;
  rcloneS3: BestOf<RcloneCopyResult> | null;
  sftp: BestOf<FleetCopyResult> | null;
  rcloneSftp: BestOf<RcloneCopyResult> | null;
  /** Why a wanted measurement was not made. */
  skipped: Partial<Record<RemoteMeasurement, string>>;
}

export interface RemoteRoundsOptions {
  rounds: number;
  wanted: (m: RemoteMeasurement) => boolean;
  workers: number;
  logDir: string;
  /** Where the SFTP runs' directories and the client key files go. */
  dests: DestinationTrees;
  keyDir: string;
  workerEnv: NodeJS.ProcessEnv;
  nodeArgs: readonly string[];
  timeoutMs: number;
}

/** Whether this build has packaged transfers (TRANSFER_MODE, being built alongside). */
export function packagedTransfersBuilt(): boolean {
  return "TRANSFER_MODE" in migrationFields;
}

export async function measureRemoteRounds(bench: BenchState, tree: SourceTree, options: RemoteRoundsOptions): Promise<RemoteResults> {
  const { say } = bench;
  const { wanted } = options;
  const skipped: RemoteResults["skipped"] = {};
  const version = wanted("rclone-s3") || wanted("rclone-sftp") ? rcloneVersion() : undefined;
  for (const m of ["rclone-s3", "rclone-sftp"] as const) {
    if (wanted(m) && !version) skipped[m] = `rclone is not installed: ${RCLONE_INSTALL_HINT}`;
  }
  for (const m of ["sftp", "rclone-sftp"] as const) {
    if (wanted(m) && !skipped[m] && !sshdInstalled()) skipped[m] = `OpenSSH's sshd is not installed (the SFTP server of this measurement): ${SSHD_INSTALL_HINT}`;
  }
  if (wanted("s3-packaged") && !packagedTransfersBuilt()) skipped["s3-packaged"] = "packaged transfers not built (no TRANSFER_MODE setting)";
  for (const [m, why] of Object.entries(skipped)) say(`${m}: skipped, ${why}`);
  const runs = (m: RemoteMeasurement) => wanted(m) && !skipped[m];

  const servers: RemoteEndpoint[] = [];
  const runsOf = { s3: [] as FleetCopyResult[], s3ReadBack: [] as FleetCopyResult[], s3Packaged: [] as FleetCopyResult[], rcloneS3: [] as RcloneCopyResult[], sftp: [] as FleetCopyResult[], rcloneSftp: [] as RcloneCopyResult[] };
  try {
    const s3 = ["s3", "s3-readback", "s3-packaged", "rclone-s3"].some((m) => runs(m as RemoteMeasurement)) ? await startS3Endpoint() : undefined;
    if (s3) servers.push(s3);
    const sftp = runs("sftp") || runs("rclone-sftp") ? await startSftpEndpoint(options.keyDir, (name) => options.dests.fresh(name)) : undefined;
    if (sftp) servers.push(sftp);
    for (const server of servers) say(`${server.kind} server started for the remote measurements`);

    // Ranges enough for every worker's two migration jobs (the tree is smaller than a default
    // BATCH_SIZE, which would give all of it to one worker), unless --set says otherwise.
    const workerEnv = { BATCH_SIZE: String(Math.ceil(tree.files / (options.workers * 2))), ...options.workerEnv };
    const fleet = async (server: RemoteEndpoint, name: string, verify: "write" | "readback", env: NodeJS.ProcessEnv, round: number, check: RemoteCheck) => {
      const target = await server.fresh(`dest-${name}-${round}`);
      const destination: FleetDestination = { url: target.url, env: { ...target.env, ...env }, label: name, check: (b, t) => check(b, t, target) };
      const r = await measureFleetCopy(bench, tree, { verify, workers: options.workers, destination, logDir: options.logDir, workerEnv, nodeArgs: options.nodeArgs, timeoutMs: options.timeoutMs });
      say(`fleet ${name} (VERIFY=${verify}): ${r.filesPerSec} files/s, ${r.failed} failed, worker peak RSS ${r.peakWorkerRssMb} MB${tagOf(round, options.rounds)}`);
      return r;
    };
    const rclone = async (server: RemoteEndpoint, name: string, round: number) => {
      const target = await server.fresh(`dest-${name}-${round}`);
      await bench.settle();
      const r = await measureRcloneTo(tree, target.rclonePath, server.rcloneEnv, () => withStorage(target, countObjects), version!);
      say(`${name}: ${r.filesPerSec} files/s${tagOf(round, options.rounds)}`);
      return r;
    };

    for (let round = 1; round <= options.rounds; round++) {
      if (s3) {
        if (runs("rclone-s3")) runsOf.rcloneS3.push(await rclone(s3, "rclone-s3", round));
        if (runs("s3")) runsOf.s3.push(await fleet(s3, "s3", "write", {}, round, objectsCheck));
        if (runs("s3-readback")) runsOf.s3ReadBack.push(await fleet(s3, "s3", "readback", {}, round, objectsCheck));
        if (runs("s3-packaged")) runsOf.s3Packaged.push(await fleet(s3, "s3-packaged", "write", { TRANSFER_MODE: "packaged" }, round, packagesCheck));
      }
      if (sftp) {
        if (runs("rclone-sftp")) runsOf.rcloneSftp.push(await rclone(sftp, "rclone-sftp", round));
        if (runs("sftp")) runsOf.sftp.push(await fleet(sftp, "sftp", "write", {}, round, objectsCheck));
      }
    }
  } finally {
    for (const server of servers.reverse()) await server.stop().catch((err: unknown) => say(`stopping the ${server.kind} server failed: ${(err as Error).message}`));
  }
  return {
    s3: bestOfFleet(runsOf.s3),
    s3ReadBack: bestOfFleet(runsOf.s3ReadBack),
    s3Packaged: bestOfFleet(runsOf.s3Packaged),
    rcloneS3: bestOf(runsOf.rcloneS3),
    sftp: bestOfFleet(runsOf.sftp),
    rcloneSftp: bestOf(runsOf.rcloneSftp),
    skipped,
  };
}

type RemoteCheck = (bench: BenchState, tree: SourceTree, target: RemoteTarget) => Promise<void>;

/** One object per file, and a sample of them hash to the recorded sha256 (read through Fleet's adapter). */
const objectsCheck: RemoteCheck = (bench, tree, target) =>
  withStorage(target, async (storage) => {
    const objects = await countObjects(storage);
    if (objects !== tree.files) throw new Error(`fleet left ${objects} objects in ${storage.label}, expected ${tree.files}`);
    await spotCheck(bench, tree, (key) => storage.readBuffer(key), storage.label);
  });

/** Packages hold many files each: at least one object arrived (the workers verified each package). */
const packagesCheck: RemoteCheck = (_bench, _tree, target) =>
  withStorage(target, async (storage) => {
    const objects = await countObjects(storage);
    if (objects === 0) throw new Error(`fleet packaged left no objects in ${storage.label}`);
  });

async function withStorage<T>(target: RemoteTarget, fn: (storage: Storage) => Promise<T>): Promise<T> {
  const storage = target.open();
  try {
    return await fn(storage);
  } finally {
    await storage.close();
  }
}

async function countObjects(storage: Storage): Promise<number> {
  let n = 0;
  for await (const _ of storage.list()) n++;
  return n;
}

const tagOf = (round: number, rounds: number) => (rounds > 1 ? ` [round ${round}/${rounds}]` : "");
