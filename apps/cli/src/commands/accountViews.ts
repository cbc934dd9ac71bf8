import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import { accountCounts } from "@fleet/db/sql/accountQueue";
import { assignmentSummary, batchCounts, recentBatches, stepProgress } from "@fleet/db/sql/accountBatches";
import { accountDetail, listAccounts } from "@fleet/db/sql/accountViews";
import { listServers } from "@fleet/db/sql/migrationServers";
import { notificationCounts } from "@fleet/db/sql/notifications";
import { parseDuration } from "@fleet/core/backoff";
import type { FleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import { CONSENT_CURSOR_KEY } from "@fleet/jobs/accounts/syncConsents";
import type { CliContext } from "../context";
import { jsonText, terminalSafe } from "../terminalText";

/**
 * `fleet accounts status [--watch]`, `list` and `show`: what an operator reads during and after
 * a night, without SQL. Every account of a batch is in one count (done, failed, cancelled,
 * postponed, revoked, or still in progress/held), and each account's steps show their phase,
 * server, output, error and cancel outcome.
 */
type Run = (fn: (ctx: CliContext) => Promise<number | void>) => Promise<void>;

const STATUSES = ["QUEUED", "SCHEDULED", "NOTIFIED", "HELD", "IN_PROGRESS", "DONE", "FAILED", "CANCELLED", "POSTPONED", "REVOKED"];
const positive = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("expected a positive integer");
  return n;
};
const status = (value: string): string => {
  const v = value.toUpperCase();
  if (!STATUSES.includes(v)) throw new InvalidArgumentError(`expected one of ${STATUSES.join(", ")}`);
  return v;
};
const duration = (value: string): number => {
  try {
    return parseDuration(value);
  } catch {
    throw new InvalidArgumentError("expected a duration like 5s, 1m");
  }
};
const iso = (d: Date | null | undefined) => (d ? d.toISOString() : "-");

export function registerAccountViewCommands(accounts: Command, run: Run): void {
  accounts
    .command("status")
    .description("accounts by status, recent batches (every account counted) with steps and servers, server health, notifications, the consent cursor")
    .option("--batches <n>", "how many recent batches", positive, 5)
    .option("--watch", "print again every --interval until Ctrl-C")
    .option("--interval <duration>", "with --watch: how often", duration, 5_000)
    .option("--json", "machine-readable output")
    .action((opts: { batches: number; watch?: boolean; interval: number; json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime();
        const stop = new AbortController();
        process.once("SIGINT", () => stop.abort());
        for (;;) {
          const report = await statusReport(runtime, opts.batches);
          if (opts.json) process.stdout.write(`${jsonText(report.data)}\n`);
          else process.stdout.write(`${opts.watch ? `\n== ${new Date().toISOString()} ==\n` : ""}${terminalSafe(report.text)}\n`);
          if (!opts.watch || stop.signal.aborted) return 0;
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, opts.interval);
            stop.signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
          });
          if (stop.signal.aborted) return 0;
        }
      }),
    );

  accounts
    .command("list")
    .description("accounts with their status, batch, current step and why it waits or failed")
    .option("--status <status>", `only this status (${STATUSES.join(", ")})`, status)
    .option("--batch <id>", "only accounts of this batch (postponed ones included)", positive)
    .option("--limit <n>", "at most this many", positive, 1000)
    .option("--json", "machine-readable output")
    .action((opts: { status?: string; batch?: number; limit: number; json?: boolean }) =>
      run(async (ctx) => {
        const { db } = await ctx.runtime();
        const rows = await listAccounts(db, { ...(opts.status ? { status: opts.status } : {}), ...(opts.batch ? { batchId: opts.batch } : {}), limit: opts.limit });
        if (opts.json) {
          process.stdout.write(`${jsonText(rows)}\n`);
          return 0;
        }
        const lines = rows.map((r) => {
          const step = r.stepName ? `${r.stepName} ${r.stepPhase}${r.server ? ` on ${r.server}` : ""}` : "-";
          const why = r.stepPhase === "WAITING" && r.waitingFor ? `waiting for ${r.waitingFor}` : (r.lastError ?? "");
          return `${r.externalId.padEnd(16)} ${r.status.padEnd(11)} batch ${String(r.batchId ?? "-").padEnd(4)} steps ${r.stepsDone}  ${step.padEnd(28)} ${why}`;
        });
        process.stdout.write(`${terminalSafe(lines.join("\n")) || "no accounts"}\n`);
        return 0;
      }),
    );

  accounts
    .command("show <account>")
    .description("one account (external id or numeric id): state, assignments, each step's phase, output, error and cancel outcome, emails, log")
    .option("--json", "machine-readable output")
    .action((idOrExternal: string, opts: { json?: boolean }) =>
      run(async (ctx) => {
        const { db } = await ctx.runtime();
        const d = await accountDetail(db, idOrExternal);
        if (!d) {
          process.stderr.write(`fleet: no account ${JSON.stringify(idOrExternal)} (external id or numeric id)\n`);
          return 1;
        }
        if (opts.json) {
          process.stdout.write(`${jsonText(d)}\n`);
          return 0;
        }
        const a = d.account;
        const out = [
          `account ${a.externalId} (#${a.id}) <${a.email}> ${a.name}`,
          `  status ${a.status}, batch ${a.batchId ?? "-"}, steps done ${a.stepsDone}${a.lastError ? `, last error: ${a.lastError}` : ""}`,
          `  consent ${iso(a.consentAt)}${a.revokedAt ? `, revoked ${iso(a.revokedAt)}` : ""}${a.heldSince ? `, held since ${iso(a.heldSince)}` : ""}${a.groupAddedAt ? `, in the group since ${iso(a.groupAddedAt)}` : ""}`,
          "assignments:",
          ...d.assignments.map((x) => `  batch ${x.batchId} ${x.role.padEnd(10)} ${x.server.padEnd(10)} ${x.state}${x.lastError ? ` (${x.lastError})` : ""}`),
          "steps:",
          ...d.steps.flatMap((s) => [
            `  batch ${s.batchId} #${s.step} ${s.name}: ${s.phase}${s.server ? ` on ${s.server}` : ""}, attempt ${s.attempt}${s.checks ? `, ${s.checks} checks` : ""}${s.waitingFor ? `, waiting for ${s.waitingFor}` : ""}${s.finishedAt ? `, ended ${iso(s.finishedAt)}` : ""}`,
            ...(s.lastError ? [`    error (${s.category ?? "?"}): ${s.lastError}`] : []),
            ...(s.output ? s.output.split("\n").map((l) => `    | ${l}`) : []),
            ...(s.cancelState ? [`    cancel command: ${s.cancelState}${s.cancelOutput ? `: ${s.cancelOutput.replace(/\n/g, " ")}` : ""}`] : []),
          ]),
          "emails:",
          ...d.emails.map((e) => `  ${e.template.padEnd(14)} ${e.status}${e.sentAt ? ` ${iso(e.sentAt)}` : ""}${e.lastError ? ` (${e.lastError})` : ""}`),
          "log:",
          ...d.log.map((l) => `  ${iso(l.time)} ${l.level.padEnd(5)} ${l.message}`),
        ];
        process.stdout.write(`${terminalSafe(out.join("\n"))}\n`);
        return 0;
      }),
    );
}

async function statusReport(runtime: FleetRuntime, batchCount: number): Promise<{ data: unknown; text: string }> {
  const { db } = runtime;
  const counts = await accountCounts(db);
  const stepNames = runtime.deps.accounts.workflow?.steps.map((s) => s.name) ?? [];
  const batches = await Promise.all(
    (await recentBatches(db, batchCount)).map(async (b) => {
      const progress = await stepProgress(db, b.id);
      // Accounts past each step: those whose steps_done is beyond its index.
      const steps = stepNames.map((name, i) => ({ name, done: progress.filter((p) => p.stepsDone > i).reduce((sum, p) => sum + p.n, 0) }));
      return { ...b, live: await batchCounts(db, b.id), assignments: await assignmentSummary(db, b.id), steps };
    }),
  );
  const servers = await listServers(db);
  const notifications = await notificationCounts(db);
  const { rows } = await db.query<{ cursor: string | null; last_success_at: Date | null; last_error: string | null }>(`SELECT cursor, last_success_at, last_error FROM sync_state WHERE key = $1`, [CONSENT_CURSOR_KEY]);
  const sync = rows[0] ?? null;
  const lines = [
    `accounts: ${Object.entries(counts).map(([s, n]) => `${s} ${n}`).join(", ")}`,
    `consent sync: ${sync ? `cursor ${sync.cursor ?? "(start)"}, last success ${sync.last_success_at?.toISOString() ?? "never"}${sync.last_error ? `, last error: ${sync.last_error}` : ""}` : "never ran"}`,
    `notifications: ${Object.entries(notifications).map(([s, n]) => `${s} ${n}`).join(", ")}`,
    `servers: ${servers.length === 0 ? "none registered yet" : ""}`,
    ...servers.map(
      (s) =>
        `    ${s.name.padEnd(10)} ${s.role.padEnd(10)} ${String(s.capacity).padStart(4)}/night ${String(s.concurrency).padStart(3)} at once  ${s.enabled ? "" : "DISABLED "}${s.health}${s.breakerOpenedAt ? " (breaker open)" : ""}${s.latencyMs !== null ? ` ${s.latencyMs} ms` : ""}${s.lastError ? `  last error: ${s.lastError}` : ""}`,
    ),
    ...batches.map(
      (b) =>
        `batch ${b.id} ${b.runDate} ${b.status}: ${b.planned} planned — ${Object.entries(b.live).map(([s, n]) => `${n} ${s.toLowerCase().replace("_", " ")}`).join(", ") || "none"}\n` +
        (b.steps.length ? `    steps: ${b.steps.map((st) => `${st.name} ${st.done}/${b.planned}`).join(", ")}\n` : "") +
        b.assignments.map((a) => `    ${a.role.padEnd(10)} ${a.server.padEnd(12)} ${a.state.padEnd(10)} ${a.n}`).join("\n"),
    ),
  ];
  return { data: { accounts: counts, sync, notifications, servers, batches }, text: lines.join("\n") };
}
