import type { FastifyInstance } from "fastify";
import type { DbPool } from "@fleet/db/pool";
import { assignmentSummary, batchCounts, recentBatches, stepProgress } from "@fleet/db/sql/accountBatches";
import type { BatchRow } from "@fleet/db/sql/accountBatches";
import { accountCounts } from "@fleet/db/sql/accountQueue";
import { listServers } from "@fleet/db/sql/migrationServers";
import type { ServerHealth, ServerRow } from "@fleet/db/sql/migrationServers";
import { notificationCounts } from "@fleet/db/sql/notifications";
import { html, page } from "./html";
import type { SafeHtml } from "./html";
import { sendPage } from "./loginRoutes";
import { navigation } from "./navigation";
import { accountDrillRoutes } from "./accountDrillPages";

/** Recent batches shown; each costs two aggregate statements. */
const BATCHES_SHOWN = 7;

export interface AccountsReport {
  at: Date;
  accounts: Record<string, number>;
  notifications: Record<string, number>;
  servers: Array<ServerRow & ServerHealth>;
  batches: Array<BatchRow & { live: Record<string, number>; assignments: Array<{ server: string; role: string; state: string; n: number }>; stepsDone: Array<{ stepsDone: number; n: number }> }>;
}

/** The account migrations at a glance: accounts by status, servers, recent batches with their assignments and step progress. */
export async function readAccounts(db: DbPool): Promise<AccountsReport> {
  const [accounts, notifications, servers, batches] = await Promise.all([accountCounts(db), notificationCounts(db), listServers(db), recentBatches(db, BATCHES_SHOWN)]);
  return {
    at: new Date(),
    accounts,
    notifications,
    servers,
    batches: await Promise.all(batches.map(async (b) => ({ ...b, live: await batchCounts(db, b.id), assignments: await assignmentSummary(db, b.id), stepsDone: await stepProgress(db, b.id) }))),
  };
}

/**
 * GET /accounts (HTML, refreshes every 30 s) and GET /accounts.json, plus the drill-down
 * /accounts/batch/:id → /accounts/account/:id (accountDrillPages.ts). Read-only for every role.
 */
export function accountsRoutes(app: FastifyInstance, db: DbPool): void {
  accountDrillRoutes(app, db);
  app.get("/accounts.json", async (_req, reply) => reply.header("cache-control", "no-store").send(await readAccounts(db)));
  app.get("/accounts", async (req, reply) => {
    const report = await readAccounts(db);
    void reply.header("refresh", "30");
    return sendPage(reply, 200, page("Accounts", accountsBody(report), navigation(req.principal)));
  });
}

function accountsBody(r: AccountsReport): SafeHtml {
  return html`<h1>Account migrations</h1>
<div class="grid">
<section><h2>Accounts by status</h2>${table(["status", "accounts"], Object.entries(r.accounts).map(([s, n]) => [s, num(n)]))}</section>
<section><h2>Notifications</h2>${table(["status", "messages"], Object.entries(r.notifications).map(([s, n]) => [s, num(n)]))}</section>
<section><h2>Migration servers</h2>${table(
    ["server", "role", "capacity / night", "at once", "state", "health", "latency", "last error"],
    r.servers.map((s) => [
      s.name,
      s.role,
      num(s.capacity),
      num(s.concurrency),
      s.enabled ? "enabled" : html`<span class="bad">disabled</span>`,
      s.health === "down" ? html`<span class="bad">down${s.breakerOpenedAt ? " (breaker open)" : ""}</span>` : s.health,
      s.latencyMs === null ? "-" : `${s.latencyMs} ms`,
      s.lastError ?? "",
    ]),
  )}</section>
</div>
<section><h2>Recent batches</h2>${
    r.batches.length === 0
      ? html`<p class="muted">none planned yet</p>`
      : r.batches.map(
          (b) => html`<h3><a href="/accounts/batch/${String(b.id)}">Batch ${String(b.id)} · ${b.runDate} · ${b.status}</a></h3>
<p>${num(b.planned)} planned, ${num(b.done)} done, ${num(b.failed)} failed, ${num(b.cancelled)} cancelled, ${num(b.postponed)} postponed${b.groupUpdatedAt ? html` · group updated ${b.groupUpdatedAt.toISOString()}` : ""}</p>
<p>Now: ${Object.entries(b.live).map(([st, n]) => html`<a href="/accounts/batch/${String(b.id)}?status=${st}">${num(n)} ${st.toLowerCase()}</a> `)}</p>
<div class="grid">
<section><h4>Assignments</h4>${table(["role", "server", "state", "accounts"], b.assignments.map((a) => [a.role, a.server, a.state, num(a.n)]))}</section>
<section><h4>Step progress</h4>${table(["steps done", "accounts"], b.stepsDone.map((p) => [String(p.stepsDone), num(p.n)]))}</section>
</div>`,
        )
  }</section>
<p class="muted">As of ${r.at.toISOString()} · refreshes every 30 s · <a href="/accounts.json">JSON</a> · <code>fleet accounts status</code> names the steps</p>`;
}

function table(head: string[], rows: Array<Array<string | SafeHtml>>): SafeHtml {
  if (rows.length === 0) return html`<p class="muted">none</p>`;
  return html`<table><tr>${head.map((h) => html`<th>${h}</th>`)}</tr>${rows.map((row) => html`<tr>${row.map((cell) => html`<td>${cell}</td>`)}</tr>`)}</table>`;
}

const num = (n: number) => n.toLocaleString("en-US");
