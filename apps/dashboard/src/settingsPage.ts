import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import type { Queryable } from "@fleet/db/pool";
import { readSettings, resetSetting, settingHistory, writeSetting } from "@fleet/db/sql/settings";
import type { SettingChangeRow, StoredSetting } from "@fleet/db/sql/settings";
import { LIVE_SETTINGS, checkLiveValue, isLiveSettingName } from "@fleet/jobs/liveSettingsCatalogue";
import type { LiveSettingName } from "@fleet/jobs/liveSettingsCatalogue";
import { actorOf, deny } from "./auth";
import type { DoneNotices } from "./doneNotice";
import { html, page } from "./html";
import type { SafeHtml } from "./html";
import { sendPage } from "./loginRoutes";
import { navigation } from "./navigation";

/**
 * Live settings on the dashboard (the same table and checks as `fleet settings`): a page that
 * lists every live setting with its stored values and recent changes; operators change or
 * reset one with a form (the session's CSRF token, no script). The JSON API: GET /api/settings
 * (scope `read`), PUT and DELETE /api/settings/:name (scope `admin`; the API takes bearer tokens
 * only). Workers pick a change up within SETTINGS_REFRESH.
 */

const setBody = z.object({ value: z.string().max(2_000), link: z.string().trim().max(500).optional() }).strict();
const formBody = z.object({ name: z.string().max(100), value: z.string().max(2_000).optional(), link: z.string().trim().max(500).optional(), action: z.enum(["set", "reset"]).default("set"), _csrf: z.string().optional() });
const linkQuery = z.object({ link: z.string().trim().max(500).optional() }).strict();

interface SettingView {
  name: LiveSettingName;
  perLink: boolean;
  description: string;
  stored: Array<{ scope: string; value: string; updatedBy: string; updatedAt: string }>;
}

function views(rows: readonly StoredSetting[]): SettingView[] {
  return (Object.keys(LIVE_SETTINGS) as LiveSettingName[]).map((name) => ({
    name,
    perLink: LIVE_SETTINGS[name].perLink === true,
    description: LIVE_SETTINGS[name].description,
    stored: rows.filter((r) => r.name === name).map((r) => ({ scope: r.scope, value: r.value, updatedBy: r.updatedBy, updatedAt: r.updatedAt.toISOString() })),
  }));
}

type Change = { ok: true; change: SettingChangeRow | null } | { ok: false; status: number; error: string };

async function change(db: Queryable, name: string, link: string | undefined, value: string | null, by: string): Promise<Change> {
  if (!isLiveSettingName(name)) return { ok: false, status: 404, error: `"${name}" is not a live setting` };
  const scope = link ?? "";
  if (scope !== "" && !LIVE_SETTINGS[name].perLink) return { ok: false, status: 400, error: `${name} is fleet-wide: it cannot be set per link` };
  if (value === null) return { ok: true, change: await resetSetting(db, name, scope, by) };
  const issue = checkLiveValue(name, value);
  if (issue) return { ok: false, status: 400, error: `${name}: ${issue}` };
  return { ok: true, change: await writeSetting(db, name, scope, value, by) };
}

export function settingsRoutes(app: FastifyInstance, db: Queryable, notices: DoneNotices): void {
  app.get("/api/settings", async (_req, reply) => {
    const [rows, history] = await Promise.all([readSettings(db), settingHistory(db, { limit: 50 })]);
    return reply.header("cache-control", "no-store").send({ settings: views(rows), history });
  });

  app.put<{ Params: { name: string } }>("/api/settings/:name", async (req, reply) => {
    if (req.principal?.role !== "operator") return deny(reply, 403, "operators only");
    const body = setBody.safeParse(req.body);
    if (!body.success) return deny(reply, 400, "expected {\"value\": \"…\", \"link\"?: \"…\"}");
    return answer(req, reply, await change(db, req.params.name, body.data.link || undefined, body.data.value, by(req)));
  });

  app.delete<{ Params: { name: string } }>("/api/settings/:name", async (req, reply) => {
    if (req.principal?.role !== "operator") return deny(reply, 403, "operators only");
    const query = linkQuery.safeParse(req.query ?? {});
    if (!query.success) return deny(reply, 400, "expected ?link=…");
    return answer(req, reply, await change(db, req.params.name, query.data.link || undefined, null, by(req)));
  });

  app.get("/settings", async (req, reply) => {
    const [rows, history] = await Promise.all([readSettings(db), settingHistory(db, { limit: 20 })]);
    const operator = req.principal?.role === "operator";
    const csrf = req.principal?.kind === "session" ? req.principal.session.csrf : "";
    // The notice only if the dashboard wrote it (doneNotice.ts).
    const done = notices.read(req.query);
    return sendPage(reply, 200, page("Settings", settingsBody(views(rows), history, operator, csrf, done), navigation(req.principal)));
  });

  app.post("/settings", async (req, reply) => {
    if (req.principal?.role !== "operator") return deny(reply, 403, "operators only");
    const form = formBody.safeParse(req.body ?? {});
    if (!form.success) return deny(reply, 400, "expected name and value fields");
    const { name, value, link, action } = form.data;
    const outcome = await change(db, name, link || undefined, action === "reset" ? null : (value ?? "").trim(), by(req));
    const done = outcome.ok ? (outcome.change ? `${name}: ${outcome.change.oldValue ?? "(environment)"} → ${outcome.change.newValue ?? "(environment)"}` : `${name} was not set`) : `not changed: ${outcome.error}`;
    if (outcome.ok) req.log.info({ user: req.principal.user, setting: name, link, value: outcome.change?.newValue ?? null }, "live setting changed");
    return reply.redirect(`/settings?${notices.query(done)}`, 303);
  });
}

function by(req: FastifyRequest): string {
  return `dashboard:${actorOf(req.principal) ?? req.principal?.user ?? "unknown"}`;
}

function answer(req: FastifyRequest, reply: FastifyReply, outcome: Change): FastifyReply {
  if (!outcome.ok) return reply.code(outcome.status).send({ error: outcome.error });
  if (outcome.change) req.log.info({ setting: outcome.change.name, scope: outcome.change.scope, value: outcome.change.newValue, by: outcome.change.changedBy }, "live setting changed");
  return reply.send({ changed: outcome.change !== null, change: outcome.change });
}

function settingsBody(settings: readonly SettingView[], history: readonly SettingChangeRow[], operator: boolean, csrf: string, done: string): SafeHtml {
  const row = (s: SettingView) => {
    const fleet = s.stored.find((v) => v.scope === "");
    const links = s.stored.filter((v) => v.scope !== "");
    return html`<tr>
      <td><code>${s.name}</code>${s.perLink ? html` <span class="muted">(per link)</span>` : ""}<br><span class="muted">${s.description}</span></td>
      <td>${fleet ? html`<code>${fleet.value}</code><br><span class="muted">by ${fleet.updatedBy}, ${fleet.updatedAt}</span>` : html`<span class="muted">environment</span>`}${links.map(
        (l) => html`<br>link <code>${l.scope}</code>: <code>${l.value}</code> <span class="muted">by ${l.updatedBy}</span>`,
      )}</td>
      <td>${operator ? html`<form method="post" action="/settings"><input type="hidden" name="_csrf" value="${csrf}"><input type="hidden" name="name" value="${s.name}"><input name="value" value="${fleet?.value ?? ""}" aria-label="${s.name} value">${
        s.perLink ? html` <input name="link" placeholder="link (empty: fleet)" aria-label="${s.name} link">` : ""
      } <button name="action" value="set">Set</button> <button name="action" value="reset">Reset</button></form>` : ""}</td>
    </tr>`;
  };
  return html`<h1>Live settings</h1>
    <p class="muted">Values set here override each process's environment and reach every worker within SETTINGS_REFRESH, without a restart. Reset gives a setting back to the environment.</p>
    ${done ? html`<p class="notice">${done}</p>` : ""}
    <table><thead><tr><th>setting</th><th>in effect</th><th></th></tr></thead><tbody>${settings.map(row)}</tbody></table>
    <h2>Recent changes</h2>
    <table><thead><tr><th>when</th><th>setting</th><th>from</th><th>to</th><th>by</th></tr></thead><tbody>${history.map(
      (c) => html`<tr><td>${c.changedAt.toISOString()}</td><td><code>${c.name}</code>${c.scope ? html` <span class="muted">${c.scope}</span>` : ""}</td><td>${c.oldValue ?? "(environment)"}</td><td>${c.newValue ?? "(environment)"}</td><td>${c.changedBy}</td></tr>`,
    )}</tbody></table>`;
}
