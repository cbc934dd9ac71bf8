import { createReadStream } from "node:fs";
import type { Command } from "commander";
import { Option } from "commander";
import { Presets, SingleBar } from "cli-progress";
import { createStorage } from "@fleet/storage/createStorage";
import type { Storage } from "@fleet/storage/storage";
import { toStorageConnection } from "@fleet/jobs/storageSettings";
import { rootVolumeRecords } from "@fleet/jobs/runtime/rootVolumeRecords";
import type { DbPool } from "@fleet/db/pool";
import { formatOf, readRecords } from "@fleet/jobs/inventory/importFormats";
import type { InventoryFormat } from "@fleet/jobs/inventory/importFormats";
import { importInventory } from "@fleet/jobs/inventory/importInventory";
import { scanInventory } from "@fleet/jobs/inventory/scanInventory";
import { lastLogEntry } from "@fleet/db/sql/log";
import type { ScanProgress, ScanResult } from "@fleet/jobs/inventory/scanInventory";
import { ConfigError, FleetError } from "@fleet/core/errors";
import { describe } from "@fleet/core/classifyError";
import type { CliContext } from "../context";
import type { Run } from "../cliRun";
import { ReportedFailure, UsageError, print } from "../cliRun";
import { formatDuration } from "./durations";
import { cliUser } from "./volumeCommands";
import { fmtRate, formatBytes } from "./status";
import { terminalSafe } from "../terminalText";

/**
 * `fleet inventory scan | import`: the ways in besides SQL. A scan lists the source and merges
 * what it finds into source_files (resumable: run it again after Ctrl-C or a crash); an import
 * takes a CSV or JSON Lines inventory. The scheduler's inventory watcher seeds ranges over the
 * new rows as for any other inventory change (or `fleet migrate start` now).
 */
const SHOWN = 20;

export function registerInventoryCommands(program: Command, run: Run): void {
  const inventory = program.command("inventory").description("fill source_files: scan the source, or import an inventory file");

  inventory
    .command("last-scan")
    .description("what the last finished scan reported (kept in the database): counts, and the entries it skipped, could not read or found vanished")
    .option("--source <label>", "the last scan of this source (as scans name it: local:/data, s3://bucket, sftp://user@host:22/path)")
    .option("--json", "machine-readable output")
    .action((opts: { source?: string; json?: boolean }) =>
      run(async (ctx) => {
        const db = await ctx.database();
        const entry = await lastLogEntry(db, "inventory-scan", "inventory scan finished", opts.source !== undefined ? `inventory:${opts.source}` : undefined);
        if (!entry) {
          process.stderr.write(`fleet: no finished inventory scan${opts.source !== undefined ? ` of ${opts.source}` : ""} on record (fleet inventory scan)\n`);
          return 1;
        }
        const d = (entry.details ?? {}) as Partial<ScanResult> & { vanishedKeys?: string[] };
        const list = (title: string, keys: readonly string[] | undefined, total: number) =>
          keys && keys.length > 0 ? [`${title}:`, ...keys.map((k) => `  ${k}`), ...(total > keys.length ? [`  … and ${(total - keys.length).toLocaleString("en-US")} more (in the scan's own output)`] : [])] : [];
        const text = [
          `last scan of ${d.source ?? "?"}${d.prefix ? ` under ${d.prefix}` : ""}, finished ${entry.at.toISOString().slice(0, 19)}Z: ${(d.files ?? 0).toLocaleString("en-US")} files (${formatBytes(d.bytes ?? 0)}), new ${d.new ?? 0}, changed ${d.changed ?? 0}, vanished ${d.vanished ?? 0}, unreadable ${d.unreadable?.length ?? 0}, skipped ${d.skipped?.length ?? 0}`,
          ...list("not files, skipped", d.skipped, d.skipped?.length ?? 0),
          ...list("could not be read, skipped", d.unreadable, d.unreadable?.length ?? 0),
          ...list("vanished", d.vanishedKeys, d.vanished ?? 0),
        ].join("\n");
        print(opts.json, { at: entry.at, ...d }, text);
        return 0;
      }),
    );

  inventory
    .command("scan")
    .description("list the source and bring source_files in line: new files added, changed ones as new versions, vanished ones reported (resumable)")
    .option("--source <url>", "what to scan (default SOURCE_URL; credentials from the SOURCE_* variables)")
    .option("--prefix <p>", "only keys starting with this")
    .option("--restart", "forget an unfinished scan of this source and prefix, and start over")
    .option("--allow-empty", "a listing with no file at all marks every known file vanished (else such a scan fails: an unmounted volume?)")
    .option("--json", "machine-readable output")
    .action((opts: { source?: string; prefix?: string; restart?: boolean; allowEmpty?: boolean; json?: boolean }) =>
      run(async (ctx) => {
        // The database and the one storage only: no job catalogue, no queues to load.
        const db = await ctx.database();
        const url = opts.source ?? ctx.config.SOURCE_URL;
        const source = openSource(url, ctx, db);
        if (url !== ctx.config.SOURCE_URL) {
          process.stderr.write(`fleet: note: workers read files from SOURCE_URL; keys scanned from ${source.label} must exist there too\n`);
        }
        const abort = new AbortController();
        const onSigint = () => abort.abort();
        process.once("SIGINT", onSigint);
        const bar = scanProgress();
        try {
          await source.check?.("source");
          const result = await scanInventory({
            db,
            source,
            log: ctx.log,
            signal: abort.signal,
            ...(opts.prefix !== undefined ? { prefix: opts.prefix } : {}),
            ...(opts.restart ? { restart: true } : {}),
            ...(opts.allowEmpty ? { allowEmpty: true } : {}),
            onProgress: (p) => bar.update(p),
          });
          bar.stop();
          print(opts.json, result, formatScan(result));
          for (const key of result.unreadable.slice(0, SHOWN)) process.stderr.write(`fleet: could not read ${terminalSafe(key)} (skipped)\n`);
          for (const entry of result.skipped.slice(0, SHOWN)) process.stderr.write(`fleet: not a file, skipped: ${terminalSafe(entry)}\n`);
          await queueMigrationOfNew(ctx, result.new + result.changed);
        } catch (err) {
          bar.stop();
          if (abort.signal.aborted) {
            process.stderr.write("fleet: scan interrupted; what was listed so far is saved: run the same command again to go on from there\n");
            throw new ReportedFailure(130);
          }
          throw err;
        } finally {
          process.off("SIGINT", onSigint);
          await source.close();
        }
      }),
    );

  inventory
    .command("import")
    .description("merge an inventory file into source_files: CSV with a header (uri,size,owner,sha256) or JSON Lines; bad lines are reported by number")
    .argument("<file>", "the inventory file ('-' for standard input)")
    .addOption(new Option("--format <format>", "csv or jsonl (default: from the file name)").choices(["csv", "jsonl"]))
    .option("--json", "machine-readable output")
    .action((file: string, opts: { format?: InventoryFormat; json?: boolean }) =>
      run(async (ctx) => {
        const format = opts.format ?? formatOf(file);
        if (!format) throw new UsageError(`cannot tell the format of ${JSON.stringify(file)} from its name: add --format csv or --format jsonl`);
        const db = await ctx.database();
        const input = file === "-" ? process.stdin : createReadStream(file);
        const result = await importInventory(db, readRecords(input, format), { log: ctx.log, file });
        const lines = [
          `imported ${result.imported.toLocaleString("en-US")} of ${result.records.toLocaleString("en-US")} records: ${result.new} new, ${result.changed} changed (new versions), ${result.reappeared} back after vanishing, ${result.unchanged} unchanged`,
          ...(result.rejected > 0 ? [`${result.rejected} rejected (fix them and import the file again: lines already imported do not change):`] : []),
          ...result.errors.slice(0, 100).map((e) => `  line ${e.line}: ${e.message}`),
          ...(result.errors.length > 100 ? [`  … and ${result.rejected - 100} more (--json lists up to 1,000)`] : []),
        ];
        print(opts.json, result, lines.join("\n"));
        await queueMigrationOfNew(ctx, result.new + result.changed);
        return result.rejected > 0 ? 1 : 0;
      }),
    );
}

/**
 * New files (or new versions) go into ranges now: seed-ranges is queued (deduplicated), so
 * workers start on them within seconds (inside the run window) instead of when the scheduler's
 * idle watcher next looks — up to an hour after a quiet spell (found by a new operator's
 * walkthrough). Without Redis the scan still counts: the scheduler picks them up later.
 */
async function queueMigrationOfNew(ctx: CliContext, files: number): Promise<void> {
  if (files === 0) return;
  try {
    const runtime = await ctx.runtime({ withRedis: true });
    await runtime.deps.jobs.enqueue("seed-ranges", {});
    process.stderr.write(`fleet: ${files.toLocaleString("en-US")} new or changed files: their migration is queued (seed-ranges)\n`);
  } catch (err) {
    process.stderr.write(`fleet: ${files.toLocaleString("en-US")} new or changed files, but their migration could not be queued (${describe(err)}): the scheduler picks them up, or run fleet migrate start\n`);
  }
}

/** A storage URL with the source's credentials; a bad URL names the setting, as the apps do. */
function openSource(url: string, ctx: CliContext, db: DbPool): Storage {
  try {
    // SOURCE_REQUIRE_MOUNT (and the volume records it governs) is about SOURCE_URL's folder,
    // not another one named by --source.
    const { mountRequiredBy, mountMemory, ...connection } = toStorageConnection(ctx.config, "source", { volumeRecords: rootVolumeRecords(() => db, `cli ${cliUser()}`) });
    return createStorage(url, url === ctx.config.SOURCE_URL ? { ...connection, ...(mountRequiredBy !== undefined ? { mountRequiredBy } : {}), ...(mountMemory !== undefined ? { mountMemory } : {}) } : connection);
  } catch (err) {
    if (err instanceof FleetError && err.category === "bad-config" && !(err instanceof ConfigError)) throw new ConfigError([`${url === ctx.config.SOURCE_URL ? "SOURCE_URL" : "--source"}: ${err.message}`]);
    throw err;
  }
}

function formatScan(r: ScanResult): string {
  const lines = [
    `scanned ${r.files.toLocaleString("en-US")} files (${formatBytes(r.bytes)}) of ${r.source}${r.prefix ? ` under ${r.prefix}` : ""} in ${formatDuration(r.seconds)} (${fmtRate(r.files / Math.max(r.seconds, 0.001))} files/s)${r.resumed ? ", resuming an earlier scan" : ""}`,
    `  new ${r.new.toLocaleString("en-US")}, changed ${r.changed.toLocaleString("en-US")} (new versions to migrate), back after vanishing ${r.reappeared}, unchanged ${r.unchanged.toLocaleString("en-US")}, vanished ${r.vanished.toLocaleString("en-US")}`,
  ];
  if (r.vanished > 0) {
    lines.push("vanished (in the inventory, no longer at the source):");
    for (const key of r.vanishedKeys.slice(0, SHOWN)) lines.push(`  ${key}`);
    if (r.vanished > SHOWN) lines.push(`  … and ${(r.vanished - SHOWN).toLocaleString("en-US")} more (--json lists up to 1,000)`);
  }
  if (r.unreadable.length > 0) lines.push(`${r.unreadable.length} folders or files could not be read and were skipped (listed on stderr with why, and by fleet inventory last-scan; fix the cause — permissions, a name that is not valid UTF-8 — and scan again)`);
  if (r.skipped.length > 0) lines.push(`${r.skipped.length} entries are not files and were skipped: symlinks that dangle or lead out of the source, FIFOs, sockets, devices (listed on stderr and by fleet inventory last-scan; --json lists up to 1,000)`);
  return lines.join("\n");
}

/** A bar with a total on a re-scan (the files expected), a counter on a first scan; lines without a terminal. */
function scanProgress(): { update(p: ScanProgress): void; stop(): void } {
  const started = Date.now();
  let bar: SingleBar | undefined;
  let lastLine = started;
  const rate = (files: number) => `${fmtRate(files / Math.max((Date.now() - started) / 1000, 0.001))} files/s`;
  return {
    update(p) {
      if (!process.stderr.isTTY) {
        if (Date.now() - lastLine >= 5_000) {
          lastLine = Date.now();
          process.stderr.write(`scanning: ${p.files.toLocaleString("en-US")} files, ${formatBytes(p.bytes)}, ${rate(p.files)}\n`);
        }
        return;
      }
      if (!bar) {
        const format = p.expected > 0 ? "scanning [{bar}] {percentage}% | {value}/{total} files | {size} | {rate}" : "scanning {value} files | {size} | {rate}";
        bar = new SingleBar({ format, stream: process.stderr, hideCursor: true, etaBuffer: 50 }, Presets.shades_classic);
        bar.start(Math.max(p.expected, p.files, 1), p.files, { size: formatBytes(p.bytes), rate: rate(p.files) });
      }
      if (p.files > bar.getTotal()) bar.setTotal(p.files);
      bar.update(p.files, { size: formatBytes(p.bytes), rate: rate(p.files) });
    },
    stop() {
      bar?.stop();
    },
  };
}
