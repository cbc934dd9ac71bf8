import { FILE_CATEGORIES } from "@fleet/core/errors";
import { formatZodIssues } from "@fleet/core/zodIssues";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import type { JobClient } from "@fleet/core/jobClient";
import type { Queryable } from "@fleet/db/pool";
import { failedFileWithAttempts, failuresOverview } from "@fleet/db/sql/failures";
import type { FailureCategorySummary, FailureFilter, FailureRow, FailureState, FileAttempt, RetryPolicy } from "@fleet/db/sql/failures";
import type { OperationHistory } from "@fleet/db/sql/operations";
import type { FleetJobs } from "@fleet/jobs/contracts";
import { requestOperatorRetry } from "@fleet/jobs/migration/operatorRetry";
import { deny } from "./auth";
import type { DoneNotices } from "./doneNotice";
import { html, page } from "./html";
import type { SafeHtml } from "./html";
import { sendPage } from "./loginRoutes";
import { navigation } from "./navigation";

/**
 * The failures page: failed, retrying and killed files, filtered by category, link (source
 * location), text and state, a page at a time; one file's attempts; and, for operators, a retry
 * of a category or of the files ticked (a form with the session's CSRF token, no script: the
 * page's CSP forbids scripts). A retry marks exactly those files and submits a retry-failed run
 * recorded in the operation history as the operator's.
 */
export interface FailuresPageOptions {
  db: Queryable;
  jobs: JobClient<FleetJobs>;
  history: OperationHistory;
  policy: RetryPolicy;
  /** The signed notice shown after a retry's redirect. */
  notices: DoneNotices;
}

const PAGE_SIZE = 50;
const STATES = ["failed", "retrying", "killed"] as const;

const many = z.union([z.string(), z.array(z.string())]).optional().transform((v) => (v === undefined ? [] : (Array.isArray(v) ? v : [v]).map((s) => s.trim()).filter(Boolean)));

const categories = many.pipe(z.array(z.string().refine((c) => FILE_CATEGORIES.includes(c), { message: `unknown category; the categories are ${FILE_CATEGORIES.join(", ")}` })));

const querySchema = z.object({
  category: categories,
  link: z.string().trim().max(500).optional(),
  text: z.string().trim().max(500).optional(),
  state: many.pipe(z.array(z.enum(STATES))),
  page: z.coerce.number().int().min(1).max(1_000_000).default(1),
  done: z.string().max(300).optional(),
  sig: z.string().max(64).optional(),
});

const retrySchema = z.object({
  category: categories,
  file: many.pipe(z.array(z.string().regex(/^\d{1,15}$/).transform(Number))),
  includePermanent: z.enum(["on"]).optional(),
  // The list's filter, sent with a category's button: it retries what the page counted.
  link: z.string().trim().max(500).optional(),
  text: z.string().trim().max(500).optional(),
  _csrf: z.string().optional(),
});

type Query = z.output<typeof querySchema>;

function filterOf(q: Query): FailureFilter {
  return {
    ...(q.category.length > 0 ? { categories: q.category } : {}),
    ...(q.link ? { link: q.link } : {}),
    ...(q.text ? { text: q.text } : {}),
    ...(q.state.length > 0 ? { states: q.state as FailureState[] } : {}),
  };
}

export function failuresRoutes(app: FastifyInstance, options: FailuresPageOptions): void {
  const { db, policy } = options;

  app.get("/failures.json", async (req, reply) => {
    const parsed = querySchema.safeParse(req.query);
    if (!parsed.success) return deny(reply, 400, `bad filter: ${formatZodIssues(parsed.error.issues)}`);
    const { total, rows, summary } = await failuresOverview(db, filterOf(parsed.data), policy, { limit: PAGE_SIZE, offset: (parsed.data.page - 1) * PAGE_SIZE });
    return reply.header("cache-control", "no-store").send({ total, page: parsed.data.page, pageSize: PAGE_SIZE, files: rows, summary });
  });

  app.get("/failures", async (req, reply) => {
    const parsed = querySchema.safeParse(req.query);
    if (!parsed.success) return deny(reply, 400, `bad filter: ${formatZodIssues(parsed.error.issues)}`);
    // The notice only if the dashboard wrote it (doneNotice.ts).
    const q = { ...parsed.data, done: options.notices.read(req.query) || undefined };
    const { summary, ...list } = await failuresOverview(db, filterOf(q), policy, { limit: PAGE_SIZE, offset: (q.page - 1) * PAGE_SIZE });
    const operator = req.principal?.role === "operator";
    const csrf = req.principal?.kind === "session" ? req.principal.session.csrf : "";
    return sendPage(reply, 200, page("Failures", failuresBody(q, list, summary, operator, csrf), navigation(req.principal)));
  });

  // One file's state and every recorded attempt, as JSON (what the page below shows).
  app.get<{ Params: { id: string } }>("/failures/file/:id.json", async (req, reply) => {
    if (!/^\d{1,15}$/.test(req.params.id)) return deny(reply, 404, "no such file");
    const found = await failedFileWithAttempts(db, Number(req.params.id), policy);
    if (!found) return deny(reply, 404, "no failed, retrying or killed file with this id");
    return reply.header("cache-control", "no-store").send(found);
  });

  app.get<{ Params: { id: string } }>("/failures/file/:id", async (req, reply) => {
    if (!/^\d{1,15}$/.test(req.params.id)) return deny(reply, 404, "no such file");
    const fileId = Number(req.params.id);
    const found = await failedFileWithAttempts(db, fileId, policy);
    if (!found) return deny(reply, 404, "no failed, retrying or killed file with this id");
    const operator = req.principal?.role === "operator";
    const csrf = req.principal?.kind === "session" ? req.principal.session.csrf : "";
    return sendPage(reply, 200, page(`File ${fileId}`, fileBody(found.file, found.attempts, operator, csrf), navigation(req.principal)));
  });

  app.post("/failures/retry", async (req, reply) => {
    if (req.principal?.role !== "operator") return deny(reply, 403, "operators only");
    const parsed = retrySchema.safeParse(req.body ?? {});
    if (!parsed.success) return deny(reply, 400, "expected category or file fields");
    const { category, file, includePermanent } = parsed.data;
    // The list's filter: sent with the button, else read from the page it was pressed on.
    const onPage = new URL(backTo(req), "http://dashboard").searchParams;
    const link = parsed.data.link ?? (onPage.get("link")?.trim() || undefined);
    const text = parsed.data.text ?? (onPage.get("text")?.trim() || undefined);
    if (category.length === 0 && file.length === 0) return reply.redirect(`/failures?${options.notices.query("nothing selected: tick files or use a category's button")}`, 303);
    const result = await requestOperatorRetry({
      db,
      jobs: options.jobs,
      selection: {
        ...(category.length > 0 ? { categories: category } : {}),
        ...(file.length > 0 ? { fileIds: file } : {}),
        ...(link ? { link } : {}),
        ...(text ? { text } : {}),
        includePermanent: includePermanent === "on",
      },
      policy,
      by: `dashboard:${req.principal.user}`,
    });
    req.log.info({ user: req.principal.user, requested: result.requested, operation: result.jobId }, "retry requested");
    const skipped = Object.entries(result.skippedPermanent).map(([c, n]) => `${c} ${n}`).join(", ");
    const done =
      result.files > 0 ? `re-queued ${result.files} files (operation ${result.jobId})${skipped ? `; left alone, permanent: ${skipped}` : ""}` : `nothing re-queued${skipped ? ` (permanent: ${skipped}; tick the box once the cause is fixed)` : ""}`;
    return reply.redirect(`${backTo(req)}${backTo(req).includes("?") ? "&" : "?"}${options.notices.query(done)}`, 303);
  });
}

/** Back to the list the form was on (same-origin path only). */
function backTo(req: FastifyRequest): string {
  const from = (req.body as Record<string, unknown> | undefined)?.back;
  // Printable ASCII only: the page's own links are percent-encoded, and a CR/LF or other
  // character a Location header cannot carry failed the redirect after the retry had run
  // (found by a security review).
  return typeof from === "string" && /^\/failures(\?[\x21-\x22\x24-\x7e]*)?$/.test(from) ? from.replace(/[?&](?:done|sig)=[^&]*/g, "") : "/failures";
}

function failuresBody(q: Query, list: { total: number; rows: FailureRow[] }, summary: FailureCategorySummary[], operator: boolean, csrf: string): SafeHtml {
  const params: Array<[string, string]> = [...q.category.map((c): [string, string] => ["category", c]), ...q.state.map((s): [string, string] => ["state", s])];
  if (q.link) params.push(["link", q.link]);
  if (q.text) params.push(["text", q.text]);
  const self = `/failures?${new URLSearchParams(params).toString()}`;
  const pages = Math.max(1, Math.ceil(list.total / PAGE_SIZE));
  const link = (p: number) => `${self}&page=${p}`;
  return html`${q.done ? html`<div class="banner" role="status" id="done">${q.done}</div>` : ""}
<h1>Failures</h1>
<section><h2>By category</h2>${summary.length === 0 ? html`<p class="muted">no failed files</p>` : html`<table><tr><th>category</th><th class="n">files</th><th class="n">failed</th><th class="n">retrying</th><th class="n">killed</th><th>example</th>${operator ? html`<th></th>` : ""}</tr>${summary.map(
    (c) => html`<tr><td><a href="/failures?category=${encodeURIComponent(c.category)}">${c.category}</a> <span class="muted">${c.retryable ? "retryable" : "permanent"}</span></td><td class="n">${c.files}</td><td class="n">${c.failed}</td><td class="n">${c.retrying}</td><td class="n">${c.killed}</td><td><code>${c.example.path}</code><br><span class="muted">${c.example.message ?? ""}</span></td>${
      operator
        ? html`<td><form method="post" action="/failures/retry"><input type="hidden" name="_csrf" value="${csrf}"><input type="hidden" name="back" value="${self}"><input type="hidden" name="category" value="${c.category}">${q.link ? html`<input type="hidden" name="link" value="${q.link}">` : ""}${q.text ? html`<input type="hidden" name="text" value="${q.text}">` : ""}${c.retryable ? "" : html`<label><input type="checkbox" name="includePermanent" value="on"> cause fixed</label> `}<button type="submit" name="retry-category" value="${c.category}">Retry ${c.failed} ${c.category}</button></form></td>`
        : ""
    }</tr>`,
  )}</table>`}</section>
<section><h2>Files</h2>
<form method="get" action="/failures" class="filters">
<label>category <input name="category" value="${q.category[0] ?? ""}"></label>
<label>link <input name="link" value="${q.link ?? ""}" placeholder="file://, s3://bucket"></label>
<label>text <input name="text" value="${q.text ?? ""}"></label>
${STATES.map((s) => html`<label><input type="checkbox" name="state" value="${s}"${q.state.includes(s) || (q.state.length === 0 && s !== "killed") ? html` checked` : ""}> ${s}</label> `)}
<button type="submit">Filter</button></form>
<p class="muted" id="count">${list.total.toLocaleString("en-US")} files${pages > 1 ? ` · page ${q.page} of ${pages}` : ""}</p>
${filesTable(list.rows, operator, csrf, self)}
<p>${q.page > 1 ? html`<a href="${link(q.page - 1)}" rel="prev">← previous</a> ` : ""}${q.page < pages ? html`<a href="${link(q.page + 1)}" rel="next">next →</a>` : ""}</p>
</section>`;
}

function filesTable(rows: readonly FailureRow[], operator: boolean, csrf: string, self: string): SafeHtml {
  if (rows.length === 0) return html`<p class="muted">none</p>`;
  const table = html`<table id="files"><tr>${operator ? html`<th></th>` : ""}<th class="n">file</th><th>state</th><th>category</th><th class="n">tries</th><th>last try</th><th>path</th><th>message</th></tr>${rows.map(
    (r) =>
      html`<tr>${operator ? html`<td>${r.state === "failed" ? html`<input type="checkbox" name="file" value="${r.fileId}" aria-label="select file ${r.fileId}">` : ""}</td>` : ""}<td class="n"><a href="/failures/file/${r.fileId}">${r.fileId}</a></td><td>${r.state}${r.retryRequested ? " (retry requested)" : ""}</td><td>${r.category}</td><td class="n">${r.attempts}</td><td>${r.lastTry.toISOString()}</td><td><code>${r.path}</code></td><td class="muted">${r.message ?? ""}</td></tr>`,
  )}</table>`;
  if (!operator) return table;
  return html`<form method="post" action="/failures/retry"><input type="hidden" name="_csrf" value="${csrf}"><input type="hidden" name="back" value="${self}">${table}
<p><label><input type="checkbox" name="includePermanent" value="on"> also permanent categories (the cause is fixed)</label> <button type="submit" name="retry-selected" value="1">Retry selected files</button></p></form>`;
}

function fileBody(row: FailureRow, attempts: readonly FileAttempt[], operator: boolean, csrf: string): SafeHtml {
  return html`<h1>File ${row.fileId}</h1>
<section><table>
<tr><th>path</th><td><code>${row.path}</code></td></tr>
<tr><th>source</th><td><code>${row.oldUri}</code></td></tr>
<tr><th>state</th><td>${row.state}${row.retryRequested ? " (retry requested)" : ""}${row.final && row.state === "failed" ? " — not retried on its own" : ""}</td></tr>
<tr><th>category</th><td>${row.category}</td></tr>
<tr><th>message</th><td>${row.message ?? ""}</td></tr>
<tr><th>tries</th><td>${row.attempts}</td></tr>
<tr><th>range</th><td>${row.rangeId ?? "–"}</td></tr>
</table>${operator && row.state === "failed" ? html`<form method="post" action="/failures/retry"><input type="hidden" name="_csrf" value="${csrf}"><input type="hidden" name="file" value="${row.fileId}"><label><input type="checkbox" name="includePermanent" value="on"> also if permanent (the cause is fixed)</label> <button type="submit">Retry this file</button></form>` : ""}</section>
<section><h2>Attempts</h2>${attempts.length === 0 ? html`<p class="muted">none recorded</p>` : html`<table id="attempts"><tr><th>when</th><th>outcome</th><th>category</th><th>message</th><th>range</th></tr>${attempts.map((a) => html`<tr><td>${a.at.toISOString()}</td><td>${a.status}</td><td>${a.category ?? ""}</td><td>${a.message ?? ""}</td><td>${a.rangeId ?? ""}</td></tr>`)}</table>`}</section>
<p><a href="/failures">← all failures</a></p>`;
}
