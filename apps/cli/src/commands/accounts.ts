import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import { accountCounts } from "@fleet/db/sql/accountQueue";
import { assignmentSummary, recentBatches, requeueFinished, stepProgress } from "@fleet/db/sql/accountBatches";
import { listServers, setServerEnabled } from "@fleet/db/sql/migrationServers";
import { notificationCounts } from "@fleet/db/sql/notifications";
import { cancelAccountMigrations } from "@fleet/jobs/accounts/cancelAccounts";
import { prepareBatch } from "@fleet/jobs/accounts/prepareBatch";
import { localDate } from "@fleet/jobs/accounts/runDate";
import { startBatchRun } from "@fleet/jobs/accounts/startBatchRun";
import { CONSENT_CURSOR_KEY, syncConsents } from "@fleet/jobs/accounts/syncConsents";
import type { CliContext } from "../context";

/**
 * `fleet accounts …`: the account migrations by hand — what the 13:00 / 13:30 / 18:00 jobs do,
 * now, plus status, cancel and switching a migration server on or off. sync/plan/run work
 * in this process (same code and same idempotency as the jobs); the steps of a run are
 * executed by the workers.
 */
type Run = (fn: (ctx: CliContext) => Promise<number | void>) => Promise<void>;

const print = (json: boolean | undefined, value: unknown, text: string) => process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${text}\n`);

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

  accounts
    .command("status")
    .description("accounts by status, recent batches with their server assignments, notifications, the consent cursor")
    .option("--batches <n>", "how many recent batches", positive, 5)
    .option("--json", "machine-readable output")
    .action((opts: { batches: number; json?: boolean }) =>
      run(async (ctx) => {
        const { db } = await ctx.runtime();
        const counts = await accountCounts(db);
        const stepNames = (await ctx.runtime()).deps.accounts.workflow?.steps.map((s) => s.name) ?? [];
        const batches = await Promise.all(
          (await recentBatches(db, opts.batches)).map(async (b) => {
            const progress = await stepProgress(db, b.id);
            // Accounts past each step: those whose steps_done is beyond its index.
            const steps = stepNames.map((name, i) => ({ name, done: progress.filter((p) => p.stepsDone > i).reduce((sum, p) => sum + p.n, 0) }));
            return { ...b, assignments: await assignmentSummary(db, b.id), steps };
          }),
        );
        const servers = await listServers(db);
        const notifications = await notificationCounts(db);
        const { rows } = await db.query<{ cursor: string | null; last_success_at: Date | null; last_error: string | null }>(
          `SELECT cursor, last_success_at, last_error FROM sync_state WHERE key = $1`,
          [CONSENT_CURSOR_KEY],
        );
        const sync = rows[0] ?? null;
        const lines = [
          `accounts: ${Object.entries(counts).map(([s, n]) => `${s} ${n}`).join(", ")}`,
          `consent sync: ${sync ? `cursor ${sync.cursor ?? "(start)"}, last success ${sync.last_success_at?.toISOString() ?? "never"}${sync.last_error ? `, last error: ${sync.last_error}` : ""}` : "never ran"}`,
          `notifications: ${Object.entries(notifications).map(([s, n]) => `${s} ${n}`).join(", ")}`,
          `servers: ${servers.map((s) => `${s.name} (${s.role}, ${s.capacity}/night${s.enabled ? "" : ", DISABLED"})`).join(", ") || "none registered yet"}`,
          ...batches.map(
            (b) =>
              `batch ${b.id} ${b.runDate} ${b.status}: ${b.planned} planned, ${b.done} done, ${b.failed} failed, ${b.cancelled} cancelled\n` +
              (b.steps.length ? `    steps: ${b.steps.map((st) => `${st.name} ${st.done}/${b.planned}`).join(", ")}\n` : "") +
              b.assignments.map((a) => `    ${a.role.padEnd(10)} ${a.server.padEnd(12)} ${a.state.padEnd(10)} ${a.n}`).join("\n"),
          ),
        ];
        print(opts.json, { accounts: counts, sync, notifications, servers, batches }, lines.join("\n"));
      }),
    );

  accounts
    .command("sync")
    .description("pull consents from the consent API now (what the 13:00 job does)")
    .option("--json", "machine-readable output")
    .action((opts: { json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime();
        const abort = new AbortController();
        process.once("SIGINT", () => abort.abort());
        const r = await syncConsents({ db: runtime.db, consent: runtime.deps.accounts.settings.consent, log: ctx.log, signal: abort.signal, job: "cli" });
        print(opts.json, r, `${r.pages} pages: ${r.inserted} new, ${r.updated} updated, ${r.unchanged} unchanged, ${r.rejected} rejected (see migration_log); cursor ${r.cursor ?? "(start)"}`);
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
        const r = await prepareBatch({ db: runtime.db, services: runtime.deps.accounts, remote: runtime.deps.remote, runDate, log: ctx.log, job: "cli" });
        if (r.emails > 0) await runtime.deps.jobs.enqueue("notify-send", {});
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
        const text = r.batchId === null ? `no batch for ${runDate}` : r.started ? `batch ${r.batchId}: run started for ${r.accounts} accounts` : `batch ${r.batchId}: not started (already running, done or cancelled)`;
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
        const r = await cancelAccountMigrations({ db: runtime.db, redis: runtime.redis, prefix: runtime.prefix, target, reason: opts.reason, by: "cli" });
        print(opts.json, r, `${r.cancelled} accounts cancelled; ${r.abortRequests} running steps asked to stop`);
      }),
    );

  accounts
    .command("requeue <externalId>")
    .description("put a FAILED or CANCELLED account back in the queue (the next night's planning takes it)")
    .action((externalId: string) =>
      run(async (ctx) => {
        const { db } = await ctx.runtime();
        const r = await requeueFinished(db, externalId);
        if (!r) {
          process.stderr.write(`fleet: no account with external id ${JSON.stringify(externalId)}\n`);
          return 1;
        }
        if (r.status !== "QUEUED") {
          process.stderr.write(`fleet: account ${externalId} is ${r.status}; only FAILED or CANCELLED accounts can be requeued\n`);
          return 1;
        }
        process.stdout.write(`${externalId} queued again\n`);
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
