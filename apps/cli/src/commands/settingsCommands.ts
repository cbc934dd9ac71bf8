import { hostname, userInfo } from "node:os";
import type { Command } from "commander";
import { readSettings, resetSetting, settingHistory, writeSetting } from "@fleet/db/sql/settings";
import type { SettingChangeRow, StoredSetting } from "@fleet/db/sql/settings";
import { LIVE_SETTINGS, checkLiveValue, isLiveSettingName } from "@fleet/jobs/liveSettingsCatalogue";
import type { LiveSettingName } from "@fleet/jobs/liveSettingsCatalogue";
import { transferLabels } from "@fleet/jobs/migration/transferLabels";
import type { Run } from "../cliRun";
import { UsageError, print } from "../cliRun";
import type { CliContext } from "../context";

/**
 * `fleet settings list|get|set|reset`: the live settings (see liveSettingsCatalogue.ts). A value
 * set here is in the settings table at once and in effect in every worker within
 * SETTINGS_REFRESH (2 s), no restart; `reset` gives the variable back to each process's
 * environment. Every change is recorded with who made it (`--by`, else user@host).
 */

interface SettingView {
  name: string;
  perLink: boolean;
  description: string;
  /** What this CLI's environment says (workers have their own environment: usually the same). */
  environment: string;
  /** Stored values: fleet-wide (scope '') and per link. */
  stored: Array<{ scope: string; value: string; updatedBy: string; updatedAt: string }>;
}

function settingName(name: string): LiveSettingName {
  if (!isLiveSettingName(name)) throw new UsageError(`"${name}" is not a live setting; live settings: ${Object.keys(LIVE_SETTINGS).join(", ")}`);
  return name;
}

function whoAmI(by: string | undefined): string {
  if (by) return by;
  try {
    return `cli:${userInfo().username}@${hostname()}`;
  } catch {
    return `cli:${hostname()}`;
  }
}

function views(ctx: CliContext, rows: readonly StoredSetting[], only?: LiveSettingName): SettingView[] {
  const env = ctx.env;
  return (Object.keys(LIVE_SETTINGS) as LiveSettingName[])
    .filter((name) => only === undefined || name === only)
    .map((name) => ({
      name,
      perLink: LIVE_SETTINGS[name].perLink === true,
      description: LIVE_SETTINGS[name].description,
      environment: env[name] ?? "(default)",
      stored: rows.filter((r) => r.name === name).map((r) => ({ scope: r.scope, value: r.value, updatedBy: r.updatedBy, updatedAt: r.updatedAt.toISOString() })),
    }));
}

function formatView(v: SettingView): string {
  const lines = [`${v.name}${v.perLink ? " (per link)" : ""}`];
  const fleet = v.stored.find((s) => s.scope === "");
  lines.push(fleet ? `  fleet: ${fleet.value}   (set by ${fleet.updatedBy} at ${fleet.updatedAt})` : `  fleet: environment: ${v.environment}`);
  for (const s of v.stored.filter((s) => s.scope !== "")) lines.push(`  link ${s.scope}: ${s.value}   (set by ${s.updatedBy} at ${s.updatedAt})`);
  return lines.join("\n");
}

function formatChange(c: SettingChangeRow): string {
  const where = c.scope === "" ? "" : ` [link ${c.scope}]`;
  return `${c.changedAt.toISOString()}  ${c.name}${where}: ${c.oldValue ?? "(environment)"} → ${c.newValue ?? "(environment)"}  by ${c.changedBy}`;
}

export function registerSettingsCommands(program: Command, run: Run): void {
  const settings = program.command("settings").description("live settings: throttles, concurrency, run windows, breaker thresholds, pausing a link — in effect fleet-wide within seconds, no restart");

  settings
    .command("list")
    .description("every live setting: the value stored for the fleet and per link, or the environment's")
    .option("--json", "machine-readable output")
    .action((opts: { json?: boolean }) =>
      run(async (ctx) => {
        const all = views(ctx, await readSettings(await ctx.database()));
        print(opts.json, all, all.map(formatView).join("\n"));
      }),
    );

  settings
    .command("get <name>")
    .description("one live setting, with --history its changes (who, what, when)")
    .option("--history", "also list its changes, newest first")
    .option("--json", "machine-readable output")
    .action((name: string, opts: { json?: boolean; history?: boolean }) =>
      run(async (ctx) => {
        const setting = settingName(name);
        const db = await ctx.database();
        const view = views(ctx, await readSettings(db), setting)[0]!;
        const history = opts.history ? await settingHistory(db, { name: setting }) : undefined;
        const text = [formatView(view), ...(history ? ["changes:", ...history.map((c) => `  ${formatChange(c)}`)] : [])].join("\n");
        print(opts.json, history ? { ...view, history } : view, text);
      }),
    );

  settings
    .command("set <name> <value>")
    .description("set a live setting for the fleet (or one --link); checked like its environment variable")
    .option("--link <label>", "only for this link (its label as `fleet migrate status` shows it: source → destination)")
    .option("--any-link", "with --link: a link other than this configuration's (workers configured with other storages)")
    .option("--by <who>", "who makes the change, for the history (default: user@host)")
    .option("--json", "machine-readable output")
    .action((name: string, value: string, opts: { link?: string; anyLink?: boolean; by?: string; json?: boolean }) =>
      run(async (ctx) => {
        const setting = settingName(name);
        if (opts.link !== undefined && !LIVE_SETTINGS[setting].perLink) throw new UsageError(`${setting} is fleet-wide: it cannot be set per link`);
        if (opts.link !== undefined && !opts.anyLink) {
          // A label no worker uses was accepted and did nothing (found by a new operator's
          // walkthrough): the link must be this configuration's, unless --any-link says otherwise.
          const { deps } = await ctx.runtime({ database: false });
          const configured = transferLabels(deps.source, deps.destination).link;
          if (opts.link !== configured) {
            throw new UsageError(`no link "${opts.link}" in this configuration: its link is "${configured}" (as fleet migrate status and the metrics name it); for workers configured with other storages add --any-link`);
          }
        }
        const issue = checkLiveValue(setting, value);
        if (issue) throw new UsageError(`${setting}: ${issue} (got ${JSON.stringify(value)})`);
        const change = await writeSetting(await ctx.database(), setting, opts.link ?? "", value, whoAmI(opts.by));
        print(opts.json, change, `${formatChange(change)}\nin effect in every worker within SETTINGS_REFRESH (${ctx.env.SETTINGS_REFRESH ?? "2s"})`);
      }),
    );

  settings
    .command("reset <name>")
    .description("remove a live setting (for the fleet or one --link): the environment's value applies again")
    .option("--link <label>", "the link's own value only")
    .option("--by <who>", "who makes the change, for the history (default: user@host)")
    .option("--json", "machine-readable output")
    .action((name: string, opts: { link?: string; by?: string; json?: boolean }) =>
      run(async (ctx) => {
        const setting = settingName(name);
        const change = await resetSetting(await ctx.database(), setting, opts.link ?? "", whoAmI(opts.by));
        print(opts.json, { reset: change !== null, change }, change ? formatChange(change) : `${setting} was not set${opts.link ? ` for link ${opts.link}` : ""}: nothing to reset`);
      }),
    );
}
