import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import { requeueFinished, requeueMany } from "@fleet/db/sql/accountBatches";
import { setServerEnabled } from "@fleet/db/sql/migrationServers";
import { afterRevocations } from "@fleet/jobs/accounts/afterRevocations";
import { cancelAccountMigrations } from "@fleet/jobs/accounts/cancelAccounts";
import { recordDailyRunOf } from "@fleet/jobs/accounts/dailyPayload";
import { updateGroup } from "@fleet/jobs/accounts/groupUpdate";
import { prepareBatch } from "@fleet/jobs/accounts/prepareBatch";
import { localDate } from "@fleet/jobs/accounts/runDate";
import { startBatchRun } from "@fleet/jobs/accounts/startBatchRun";
import { syncConsents } from "@fleet/jobs/accounts/syncConsents";
import type { CliContext } from "../context";
import { registerAccountViewCommands } from "./accountViews";
import { jsonText, terminalSafe } from "../terminalText";

/**
 * `fleet accounts …`: the account migrations by hand — what the 13:00 / 13:30 / 17:30 / 18:00
 * jobs do, now, plus cancel, requeue and switching a migration server on or off (status, list
 * and show: accountViews.ts). sync/plan/group-update/run work in this process (same code and
 * same idempotency as the jobs) and, run for today, record the daily marker as the jobs do, so
 * the scheduler's catch-up does not run them again; the steps of a run are executed by the
 * workers.
 */
type Run = (fn: (ctx: CliContext) => Promise<number | void>) => Promise<void>;

const print = (json: boolean | undefined, value: unknown, text: string) => process.stdout.write(json ? `${jsonText(value)}\n` : `${terminalSafe(text)}\n`);

const date = (value: string): string => {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(value)) throw new InvalidArgumentError("expected YYYY-MM-DD");
  return value;
};
const positive = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("expected a positive integer");
  return n;
};

export function registerAccountCommands(program: Command, run: Run): void {
  const accounts = program.command("accounts").description("account migrations: consent sync, nightly batches, remote steps, notifications");
  const today = (ctx: CliContext, given?: string) => given ?? localDate(new Date(), ctx.config.FLEET_TZ);

  registerAccountViewCommands(accounts, run);

  accounts
    .command("sync")
    .description("pull consents from the consent API now (what the 13:00 job does)")
    .option("--json", "machine-readable output")
    .action((opts: { json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: true });
        const abort = new AbortController();
        process.once("SIGINT", () => abort.abort());
        const { settings } = runtime.deps.accounts;
        const r = await syncConsents({ db: runtime.db, consent: settings.consent, log: ctx.log, signal: abort.signal, job: "cli", revokeDuringRun: settings.revokeDuringRun, notifyWindow: settings.notifyWindow });
        await afterRevocations({ db: runtime.db, jobs: runtime.deps.jobs, accounts: runtime.deps.accounts }, r, "cli");
        await recordDailyRunOf(runtime.db, "accounts-sync", today(ctx), ctx.config.FLEET_TZ);
        print(opts.json, r, `${r.pages} pages: ${r.inserted} new, ${r.updated} updated, ${r.unchanged} unchanged, ${r.rejected} rejected, ${r.revoked} revoked (see migration_log); cursor ${r.cursor ?? "(start)"}`);
      }),
    );

  accounts
    .command("plan")
    .description("plan the night's batch and queue its pre-migration emails now (what the 13:30 job does; once per date)")
    .option("--date <yyyy-mm-dd>", "the night (default: today in FLEET_TZ)", date)
    .option("--json", "machine-readable output")
    .action((opts: { date?: string; json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: true });
        const runDate = today(ctx, opts.date);
        const r = await prepareBatch({ db: runtime.db, services: runtime.deps.accounts, remote: runtime.deps.remote, runDate, log: ctx.log, job: "cli", jobs: runtime.deps.jobs });
        if (r.emails > 0) await runtime.deps.jobs.enqueue("notify-send", {});
        await recordDailyRunOf(runtime.db, "accounts-prepare", runDate, ctx.config.FLEET_TZ);
        const text =
          r.batchId === null
            ? `no batch for ${runDate}: no queued accounts, or no enabled server capacity for a step role`
            : `${r.created ? "planned" : "already planned"}: batch ${r.batchId} for ${runDate}, ${r.accounts} accounts${Object.keys(r.perServer).length ? ` (${Object.entries(r.perServer).map(([s, n]) => `${s} ${n}`).join(", ")})` : ""}; ${r.emails} emails queued`;
        print(opts.json, r, text);
      }),
    );

  accounts
    .command("run")
    .description("start the night's run now (what the 18:00 job does; planned first if needed; the workers run the steps)")
    .option("--date <yyyy-mm-dd>", "the night (default: today in FLEET_TZ)", date)
    .option("--json", "machine-readable output")
    .action((opts: { date?: string; json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: true });
        const runDate = today(ctx, opts.date);
        const r = await startBatchRun({ db: runtime.db, services: runtime.deps.accounts, remote: runtime.deps.remote, jobs: runtime.deps.jobs, runDate, log: ctx.log, job: "cli" });
        await recordDailyRunOf(runtime.db, "accounts-run", runDate, ctx.config.FLEET_TZ);
        const held = r.held ? `; ${r.held} held by the pre-flight (down: ${Object.keys(r.down ?? {}).join(", ")})` : "";
        const text = r.batchId === null ? `no batch for ${runDate}` : r.started ? `batch ${r.batchId}: run started for ${r.accounts} accounts${held}` : `batch ${r.batchId}: not started (already running, done or cancelled)`;
        print(opts.json, r, text);
        return r.batchId === null ? 1 : 0;
      }),
    );

  accounts
    .command("cancel")
    .description("cancel one account (by external id) or a whole batch, before or during its run")
    .option("--account <externalId>", "the consent API's id of the account")
    .option("--batch <id>", "a batch id (see status)", positive)
    .option("--reason <text>", "stored with the accounts", "cancelled by an operator")
    .option("--json", "machine-readable output")
    .action((opts: { account?: string; batch?: number; reason: string; json?: boolean }) =>
      run(async (ctx) => {
        if ((opts.account === undefined) === (opts.batch === undefined)) {
          process.stderr.write("fleet: give exactly one of --account <externalId> or --batch <id>\n");
          return 2;
        }
        const runtime = await ctx.runtime({ withRedis: true });
        let target: { accountId: number } | { batchId: number };
        if (opts.account !== undefined) {
          const { rows } = await runtime.db.query<{ id: number }>(`SELECT id FROM migration_queue WHERE external_id = $1`, [opts.account]);
          if (!rows[0]) {
            process.stderr.write(`fleet: no account with external id ${JSON.stringify(opts.account)}\n`);
            return 1;
          }
          target = { accountId: rows[0].id };
        } else {
          target = { batchId: opts.batch! };
        }
        const { accounts: services } = runtime.deps;
        const r = await cancelAccountMigrations({ db: runtime.db, redis: runtime.redis, prefix: runtime.prefix, jobs: runtime.deps.jobs, workflow: services.workflow, notifyWindow: services.settings.notifyWindow, target, reason: opts.reason, by: "cli" });
        print(opts.json, r, `${r.cancelled} accounts cancelled; ${r.abortRequests} running steps asked to stop; ${r.cleanups} accounts get their cancel/group-removal commands run (see \`fleet accounts show\`)`);
      }),
    );

  accounts
    .command("requeue [externalId]")
    .description("put FAILED or CANCELLED accounts back in the queue (the next night's planning takes them): one, a batch's, or all of a status")
    .option("--batch <id>", "every FAILED or CANCELLED account of this batch", positive)
    .option("--status <status>", "every account of this status: FAILED or CANCELLED", (v: string) => {
      const u = v.toUpperCase();
      if (u !== "FAILED" && u !== "CANCELLED") throw new InvalidArgumentError("expected FAILED or CANCELLED");
      return u as "FAILED" | "CANCELLED";
    })
    .option("--category <category>", "with --batch/--status: only accounts whose failed step has this error category (e.g. auth-failed, timeout)")
    .option("--json", "machine-readable output")
    .action((externalId: string | undefined, opts: { batch?: number; status?: "FAILED" | "CANCELLED"; category?: string; json?: boolean }) =>
      run(async (ctx) => {
        const bulk = opts.batch !== undefined || opts.status !== undefined;
        if ((externalId !== undefined) === bulk || (opts.category !== undefined && !bulk)) {
          process.stderr.write("fleet: give an external id, or --batch <id> and/or --status FAILED|CANCELLED [--category C]\n");
          return 2;
        }
        const { db } = await ctx.runtime();
        if (bulk) {
          const ids = await requeueMany(db, { ...(opts.batch ? { batchId: opts.batch } : {}), ...(opts.status ? { status: opts.status } : {}), ...(opts.category ? { category: opts.category } : {}) });
          print(opts.json, { requeued: ids }, `${ids.length} accounts queued again${ids.length ? `: ${ids.slice(0, 20).join(", ")}${ids.length > 20 ? ", …" : ""}` : ""}`);
          return 0;
        }
        const r = await requeueFinished(db, externalId!);
        if (!r) {
          process.stderr.write(`fleet: no account with external id ${JSON.stringify(externalId)}\n`);
          return 1;
        }
        if (r.status !== "QUEUED") {
          process.stderr.write(`fleet: account ${externalId} is ${r.status}; only FAILED or CANCELLED accounts can be requeued\n`);
          return 1;
        }
        print(opts.json, { requeued: [externalId] }, `${externalId} queued again`);
        return 0;
      }),
    );

  accounts
    .command("group-update")
    .description("put the night's accounts into the directory group now (what the 17:30 job does; a pre-flight probes the servers first)")
    .option("--date <yyyy-mm-dd>", "the night (default: today in FLEET_TZ)", date)
    .option("--json", "machine-readable output")
    .action((opts: { date?: string; json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: true });
        const runDate = today(ctx, opts.date);
        const abort = new AbortController();
        process.once("SIGINT", () => abort.abort());
        const r = await updateGroup({ db: runtime.db, services: runtime.deps.accounts, remote: runtime.deps.remote, jobs: runtime.deps.jobs, runDate, log: ctx.log, signal: abort.signal, job: "cli" }).catch((err: Error) => ({ error: err.message }));
        if ("error" in r) {
          print(opts.json, r, `group update for ${runDate}: ${r.error}`);
          return 1;
        }
        await recordDailyRunOf(runtime.db, "accounts-group-update", runDate, ctx.config.FLEET_TZ);
        print(opts.json, r, r.skipped ? `group update for ${runDate}: ${r.skipped}` : `group update for ${runDate}: ${r.added} added, ${r.held} held (server down), ${r.failed} failed`);
        return 0;
      }),
    );

  accounts
    .command("server <name>")
    .description("enable or disable a migration server (disabled: no new accounts; its unstarted steps move to another server of the role)")
    .option("--enable", "take accounts again")
    .option("--disable", "take no more accounts")
    .action((name: string, opts: { enable?: boolean; disable?: boolean }) =>
      run(async (ctx) => {
        if (opts.enable === opts.disable) {
          process.stderr.write("fleet: give --enable or --disable\n");
          return 2;
        }
        const { db } = await ctx.runtime();
        if (!(await setServerEnabled(db, name, opts.enable === true))) {
          process.stderr.write(`fleet: no migration server ${JSON.stringify(name)} (servers are registered from ACCOUNTS_WORKFLOW_FILE at planning)\n`);
          return 1;
        }
        process.stdout.write(`${name} ${opts.enable ? "enabled" : "disabled"}\n`);
      }),
    );
}
