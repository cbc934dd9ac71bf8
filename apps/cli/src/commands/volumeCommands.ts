import { hostname, userInfo } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { writeLog } from "@fleet/db/sql/log";
import { forgetRootVolume, listRootVolumes } from "@fleet/db/sql/rootVolumes";
import type { RootVolumeRow } from "@fleet/db/sql/rootVolumes";
import type { Run } from "../cliRun";
import { UsageError, print } from "../cliRun";

/**
 * `fleet volumes` and `fleet volumes forget ROOT`: the mounted volumes local storage roots were
 * seen on (root_volumes). Once a root was seen on a volume, every worker requires it there
 * (SOURCE_REQUIRE_MOUNT / DESTINATION_REQUIRE_MOUNT unset), so one started while the volume is
 * away waits instead of filling the empty mount point. A volume moved on purpose (the root now
 * on the root filesystem, or on another volume above) is forgotten here; the next worker to see
 * the root on a volume records it again.
 */

/** Who runs this command, as the records and the log name it. */
export function cliUser(): string {
  try {
    return `${userInfo().username}@${hostname()}`;
  } catch {
    return hostname();
  }
}

function rootOf(arg: string): string {
  if (/^file:/i.test(arg)) {
    try {
      // As the storage resolves its root (createStorage, ConfinedRoot): the record is keyed by
      // that path, so …/in/ names the root …/in (a trailing slash matched no record).
      return path.resolve(fileURLToPath(arg));
    } catch {
      throw new UsageError(`${JSON.stringify(arg)} is not a local file URL (file:///absolute/path)`);
    }
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(arg)) throw new UsageError(`${JSON.stringify(arg)}: only local folders have volume records`);
  return path.resolve(arg);
}

function formatRow(r: RootVolumeRow): string {
  return `${r.root}  on the volume mounted at ${r.mountPoint}  (seen ${r.seenAt.toISOString()} by ${r.seenBy})`;
}

export function registerVolumeCommands(program: Command, run: Run): void {
  const volumes = program
    .command("volumes")
    .description("the mounted volumes local storage roots were seen on: each such root must be on its volume (a worker waits while it is away)")
    .option("--json", "machine-readable output")
    .action((opts: { json?: boolean }) =>
      run(async (ctx) => {
        const rows = await listRootVolumes(await ctx.database());
        print(opts.json, rows, rows.length === 0 ? "no local storage root has been seen on a mounted volume" : rows.map(formatRow).join("\n"));
      }),
    );

  volumes
    .command("forget")
    .description("forget the volume a root was seen on (it was moved on purpose): workers no longer wait for it; the next one to see the root on a volume records that one")
    .argument("<root>", "the root's folder as SOURCE_URL or DESTINATION_URL name it (a path or file:///path)")
    .option("--json", "machine-readable output")
    .action((arg: string, opts: { json?: boolean }) =>
      run(async (ctx) => {
        const root = rootOf(arg);
        const db = await ctx.database();
        const gone = await forgetRootVolume(db, root);
        if (!gone) {
          process.stderr.write(`fleet: no volume is recorded for ${root} (fleet volumes lists them)\n`);
          return 1;
        }
        await writeLog(db, [{ level: "info", job: "cli", subject: `volume:${root}`, message: "volume record forgotten", details: { ...gone, by: cliUser() } }]);
        print(opts.json, gone, `forgotten: ${formatRow(gone)}`);
        return 0;
      }),
    );
}
