import type { FastifyInstance } from "fastify";
import type { BreakerView } from "@fleet/core/linkBreakers";
import type { Queryable } from "@fleet/db/pool";
import { html, page } from "./html";
import type { SafeHtml } from "./html";
import { sendPage } from "./loginRoutes";
import { navigation } from "./navigation";
import { readProgress } from "./progressData";
import type { ProgressOptions, ProgressReport } from "./progressData";
import { sharedRead } from "./sharedRead";
import type { ReadingVersion, SharedRead } from "./sharedRead";
import { throughputChart } from "./throughputChart";
import { formatFilesPerSec } from "@fleet/jobs/status/migrationNumbers";

export interface ProgressPageOptions extends ProgressOptions {
  db: Queryable;
  /** The API lock's reason while locked (shown as a banner). */
  lockReason(): Promise<string | null>;
  /** Every known link's breaker (Redis); null when they cannot be read. */
  breakers(): Promise<BreakerView[] | null>;
  /** The version the dashboard replicas share for their progress readings (sharedRead.ts). */
  readingVersion?: ReadingVersion;
}

/**
 * GET /progress (HTML, refreshes itself every 10 s without script) and GET /progress.json (the
 * same numbers), from one reading shared by the requests that want it at about the same time
 * (sharedRead.ts); the caller invalidates it when the dashboard changes something.
 */
export function progressRoutes(app: FastifyInstance, options: ProgressPageOptions): SharedRead<ProgressReport> {
  const reading = sharedRead(() => readProgress(options.db, options), { version: options.readingVersion });
  app.get("/progress.json", async (_req, reply) => {
    const [report, breakers] = await Promise.all([reading.get(), options.breakers()]);
    return reply.header("cache-control", "no-store").send({ ...report, breakers });
  });

  app.get("/progress", async (req, reply) => {
    const [report, lock, breakers] = await Promise.all([reading.get(), options.lockReason(), options.breakers()]);
    void reply.header("refresh", "10");
    return sendPage(reply, 200, page("Progress", progressBody(report, options, lock, breakers), navigation(req.principal)));
  });
  return reading;
}

function progressBody(r: ProgressReport, charts: { chartMinutes: number; chartHours: number }, lock: string | null, breakers: BreakerView[] | null): SafeHtml {
  const n = r.numbers;
  const rate = (x: { filesPerSec: number; bytesPerSec: number } | null) => (x === null ? "–" : `${formatFilesPerSec(x.filesPerSec)} files/s, ${bytes(x.bytesPerSec)}/s`);
  return html`${lock === null ? "" : html`<div class="banner" role="status"><strong>API locked</strong> (maintenance): ${lock}</div>`}
${n.blockers.map((b) => html`<div class="banner" role="status" data-blocker="${b.kind}"><strong>${BLOCKER_TITLES[b.kind]}</strong>: ${b.reason}${b.since ? html` · since ${b.since}` : ""}${b.resumesAt ? html` · resumes ${b.resumesAt}` : ""}</div>`)}
${r.warnings.map((w) => html`<div class="banner" role="status">${w}</div>`)}
<h1>Migration progress</h1>
<section><h2>Overall</h2><table>
<tr><th>state</th><td class="n" id="state">${stateText(r)}</td></tr>
<tr><th>files done</th><td class="n">${num(n.done)} / ${num(n.total.files)} (${n.percent}%)</td></tr>
<tr><th>migrated</th><td class="n">${num(n.succeeded)} files, ${bytes(n.bytesMigrated)} of ${bytes(n.total.bytes)}</td></tr>
<tr><th>failed</th><td class="n">${num(n.failed)} (${num(n.failedFinal)} for good, ${num(n.retryRequested)} retry requested)${n.failed > 0 ? html` · <a href="/failures">see the files</a>` : ""}</td></tr>
<tr><th>retrying</th><td class="n">${num(n.retrying)}</td></tr>
<tr><th>killed</th><td class="n">${num(n.killed)}</td></tr>
<tr><th>rate, last minute</th><td class="n" id="rate-now">${rate(n.rate.lastMinute)}</td></tr>
<tr><th>rate, whole run</th><td class="n" id="rate-run">${rate(n.rate.run)}</td></tr>
<tr><th>elapsed</th><td class="n">${n.elapsedSeconds === null ? "–" : duration(n.elapsedSeconds)}</td></tr>
<tr><th>ETA</th><td class="n" id="eta">${n.state === "blocked" ? "– (held)" : n.etaSeconds === null ? "–" : duration(n.etaSeconds)}</td></tr>
${n.vanished + n.superseded > 0 ? html`<tr><th>not counted</th><td class="n">${num(n.vanished)} vanished before migration, ${num(n.superseded)} old versions of changed files</td></tr>` : ""}
</table></section>
<div class="grid">
<section><h2>Ranges by status</h2>${table(["status", "ranges", "files ok", "files failed"], r.ranges.map((x) => [x.status, num(x.ranges), num(x.filesSucceeded), num(x.filesFailed)]))}</section>
<section><h2>Files by status</h2>${table(["status", "files", "bytes"], r.files.map((x) => [x.status, num(x.count), bytes(x.bytes)]))}</section>
<section><h2>Retries by count</h2>${table(["retries", "status", "files"], r.retries.map((x) => [String(x.retryCount), x.status, num(x.files)]))}</section>
</div>
<section><h2>Throughput (files per minute, last ${charts.chartMinutes} min)</h2>${throughputChart(r.throughput.map((t) => ({ ...t, at: t.minute })), { buckets: charts.chartMinutes, unit: "minute" }, r.at)}</section>
<section><h2>Throughput (files per hour, last ${charts.chartHours} h)</h2>${throughputChart(r.throughputHourly.map((t) => ({ ...t, at: t.hour })), { buckets: charts.chartHours, unit: "hour" }, r.at)}</section>
<section><h2>Transfers by link (succeeded; rates as the run's: now over the last minute, average over the whole run; failed: files whose last attempt failed)</h2>${table(
    ["source → destination", "files", "bytes", "now", "average", "failed", "failed now"],
    r.links.map((l) => [
      html`<code>${l.source}</code> → <code>${l.destination}</code>`,
      num(l.files),
      bytes(l.bytes),
      rate(l.rate.lastMinute),
      rate(l.rate.run),
      num(l.failedFiles),
      l.failedRate.lastMinute === null ? "–" : `${formatFilesPerSec(l.failedRate.lastMinute)} files/s`,
    ]),
  )}</section>
<section><h2>Link breakers</h2>${breakers === null ? html`<p class="muted">unknown: Redis could not be read</p>` : table(
    ["link", "state", "since", "reason", "next probe", "failed probes"],
    breakers.map((b) => [
      html`<code>${b.link}</code>`,
      b.open ? html`<span class="bad">open</span>` : "closed",
      b.openedAt ?? "–",
      b.reason ?? "–",
      b.open ? `in ${duration(b.nextProbeInSeconds ?? 0)} (${b.nextProbeAt ?? ""})` : "–",
      b.open ? `${b.failedProbes ?? 0}${b.lastProbeError ? `: ${b.lastProbeError}` : ""}` : "–",
    ]),
  )}</section>
<section><h2>Failures by category</h2>${table(
    ["category", "files", "example"],
    r.failures.map((f) => [
      html`<a href="/failures?category=${encodeURIComponent(f.category)}">${f.category}</a> <span class="muted">${f.retryable ? "retryable" : "permanent"}</span>`,
      num(f.files),
      html`<code>${f.example.path}</code><br><span class="muted">${f.example.message ?? ""}</span>`,
    ]),
  )}</section>
<section><h2>Workers holding ranges</h2>${table(["worker", "ranges", "last heartbeat"], r.workers.map((w) => [w.owner, num(w.ranges), html`${w.lastHeartbeat ? w.lastHeartbeat.toISOString() : "never"}${w.stale ? html` <span class="bad">stale</span>` : ""}`]))}</section>
<p class="muted">As of ${r.at.toISOString()} · refreshes every 10 s · <a href="/progress.json">JSON</a></p>`;
}

const BLOCKER_TITLES: Record<string, string> = { paused: "Paused", "window-closed": "Outside the migration window", "breaker-open": "Link breaker open" };

function stateText(r: ProgressReport): string {
  const n = r.numbers;
  if (n.state === "blocked") return `held: ${n.blockers.map((b) => (b.kind === "paused" ? "paused" : b.kind)).join(", ")}`;
  if (n.state === "done") return n.failed > 0 ? `done, ${num(n.failed)} failed` : "done";
  return n.state;
}

function table(head: string[], rows: Array<Array<string | SafeHtml>>): SafeHtml {
  if (rows.length === 0) return html`<p class="muted">none</p>`;
  return html`<table><tr>${head.map((h) => html`<th>${h}</th>`)}</tr>${rows.map((row) => html`<tr>${row.map((cell) => html`<td>${cell}</td>`)}</tr>`)}</table>`;
}

const num = (n: number) => n.toLocaleString("en-US");

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function duration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
