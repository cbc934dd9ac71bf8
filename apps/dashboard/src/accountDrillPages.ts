import type { FastifyInstance } from "fastify";
import type { DbPool } from "@fleet/db/pool";
import { batchById, batchCounts } from "@fleet/db/sql/accountBatches";
import { accountDetail, listAccounts } from "@fleet/db/sql/accountViews";
import { html, page } from "./html";
import type { SafeHtml } from "./html";
import { sendPage } from "./loginRoutes";
import { navigation } from "./navigation";

/**
 * The drill-down of account migrations: a batch's accounts (every one of them, postponed ones
 * included, filterable by status) → one account's steps with their phase, server, output,
 * error and cancel outcome, its emails and its log. HTML and JSON; read-only for every role.
 */

const STATUS = /^[A-Z_]{1,20}$/;
const ID = /^[0-9]{1,15}$/;

export function accountDrillRoutes(app: FastifyInstance, db: DbPool): void {
  const batchData = async (id: string, status: string | undefined) => {
    if (!ID.test(id)) return undefined;
    const batch = await batchById(db, Number(id));
    if (!batch) return undefined;
    const filter = status && STATUS.test(status) ? status : undefined;
    return { batch, counts: await batchCounts(db, batch.id), accounts: await listAccounts(db, { batchId: batch.id, ...(filter ? { status: filter } : {}), limit: 5000 }), status: filter };
  };
  app.get<{ Params: { id: string }; Querystring: { status?: string } }>("/accounts/json/batch/:id", async (req, reply) => {
    const data = await batchData(req.params.id, req.query.status);
    return data ? reply.header("cache-control", "no-store").send(data) : reply.code(404).send({ error: "no such batch" });
  });
  app.get<{ Params: { id: string }; Querystring: { status?: string } }>("/accounts/batch/:id", async (req, reply) => {
    const data = await batchData(req.params.id, req.query.status);
    if (!data) return sendPage(reply, 404, page("Batch not found", html`<h1>No batch ${req.params.id}</h1><p><a href="/accounts">Accounts</a></p>`, navigation(req.principal)));
    void reply.header("refresh", "30");
    const b = data.batch;
    const body = html`<h1>Batch ${String(b.id)} · ${b.runDate} · ${b.status}</h1>
<p><a href="/accounts">← all batches</a> · ${Object.entries(data.counts).map(([st, n]) => html`<a href="/accounts/batch/${String(b.id)}?status=${st}">${String(n)} ${st.toLowerCase()}</a> · `)}<a href="/accounts/batch/${String(b.id)}">all</a></p>
${table(
  ["account", "email", "status", "steps done", "current step", "why"],
  data.accounts.map((a) => [
    html`<a href="/accounts/account/${String(a.id)}">${a.externalId}</a>`,
    a.email,
    a.status,
    String(a.stepsDone),
    a.stepName ? `${a.stepName} ${a.stepPhase ?? ""}${a.server ? ` on ${a.server}` : ""}` : "-",
    a.stepPhase === "WAITING" && a.waitingFor ? `waiting for ${a.waitingFor}` : (a.lastError ?? ""),
  ]),
)}
<p class="muted">${data.status ? `Only ${data.status.toLowerCase()} accounts. ` : ""}Refreshes every 30 s · <a href="/accounts/json/batch/${String(b.id)}">JSON</a></p>`;
    return sendPage(reply, 200, page(`Batch ${b.id}`, body, navigation(req.principal)));
  });

  app.get<{ Params: { id: string } }>("/accounts/json/account/:id", async (req, reply) => {
    const d = ID.test(req.params.id) ? await accountDetail(db, req.params.id) : undefined;
    return d ? reply.header("cache-control", "no-store").send(d) : reply.code(404).send({ error: "no such account" });
  });
  app.get<{ Params: { id: string } }>("/accounts/account/:id", async (req, reply) => {
    const d = ID.test(req.params.id) ? await accountDetail(db, req.params.id) : undefined;
    if (!d) return sendPage(reply, 404, page("Account not found", html`<h1>No account ${req.params.id}</h1><p><a href="/accounts">Accounts</a></p>`, navigation(req.principal)));
    const a = d.account;
    const body = html`<h1>Account ${a.externalId}</h1>
<p>${a.name} &lt;${a.email}&gt; · <b>${a.status}</b> · ${a.batchId !== null ? html`<a href="/accounts/batch/${String(a.batchId)}">batch ${String(a.batchId)}</a>` : "no batch"} · ${String(a.stepsDone)} steps done${a.lastError ? html` · <span class="bad">${a.lastError}</span>` : ""}</p>
<h2>Steps</h2>
${
  d.steps.length === 0
    ? html`<p class="muted">no step has run yet</p>`
    : d.steps.map(
        (s) => html`<section><h3>Batch ${String(s.batchId)} · step ${String(s.step + 1)} · ${s.name} · ${s.phase}${s.server ? ` on ${s.server}` : ""}</h3>
<p>attempt ${String(s.attempt)}${s.checks ? `, ${s.checks} status checks` : ""}${s.startedAt ? `, started ${s.startedAt.toISOString()}` : ""}${s.finishedAt ? `, ended ${s.finishedAt.toISOString()}` : ""}${s.waitingFor ? `, waiting for ${s.waitingFor}` : ""}</p>
${s.lastError ? html`<p class="bad">${s.category ?? "error"}: ${s.lastError}</p>` : ""}
${s.output ? html`<pre>${s.output}</pre>` : ""}
${s.cancelState ? html`<p>cancel command: ${s.cancelState}</p>${s.cancelOutput ? html`<pre>${s.cancelOutput}</pre>` : ""}` : ""}</section>`,
      )
}
<h2>Assignments</h2>${table(["batch", "role", "server", "state", "error"], d.assignments.map((x) => [String(x.batchId), x.role, x.server, x.state, x.lastError ?? ""]))}
<h2>Emails</h2>${table(["template", "status", "attempts", "sent", "error"], d.emails.map((e) => [e.template, e.status, String(e.attempts), e.sentAt?.toISOString() ?? "", e.lastError ?? ""]))}
<h2>Log</h2>${table(["time", "level", "message"], d.log.map((l) => [l.time.toISOString(), l.level, l.message]))}
<p class="muted"><a href="/accounts/json/account/${String(a.id)}">JSON</a> · <code>fleet accounts show ${a.externalId}</code></p>`;
    return sendPage(reply, 200, page(`Account ${a.externalId}`, body, navigation(req.principal)));
  });
}

function table(head: string[], rows: Array<Array<string | SafeHtml>>): SafeHtml {
  if (rows.length === 0) return html`<p class="muted">none</p>`;
  return html`<table><tr>${head.map((h) => html`<th>${h}</th>`)}</tr>${rows.map((row) => html`<tr>${row.map((cell) => html`<td>${cell}</td>`)}</tr>`)}</table>`;
}
