import type { FastifyInstance } from "fastify";
import type { BreakerView } from "@fleet/core/linkBreakers";
import type { Queryable } from "@fleet/db/pool";
import { html, page } from "./html";
import type { SafeHtml } from "./html";
import { sendPage } from "./loginRoutes";
import { navigation } from "./navigation";
import { LINK_WINDOW_SECONDS, readProgress } from "./progressData";
import type { ProgressOptions, ProgressReport } from "./progressData";
import { throughputChart } from "./throughputChart";

export interface ProgressPageOptions extends ProgressOptions {
  db: Queryable;
  /** The API lock's reason while locked (shown as a banner). */
  lockReason(): Promise<string | null>;
  /** Every known link's breaker (Redis); null when they cannot be read. */
  breakers(): Promise<BreakerView[] | null>;
}

/** GET /progress (HTML, refreshes itself every 10 s without script) and GET /progress.json (the same numbers). */
export function progressRoutes(app: FastifyInstance, options: ProgressPageOptions): void {
  app.get("/progress.json", async (_req, reply) => {
    const [report, breakers] = await Promise.all([readProgress(options.db, options), options.breakers()]);
    return reply.header("cache-control", "no-store").send({ ...report, breakers });
  });

  app.get("/progress", async (req, reply) => {
    const [report, lock, breakers] = await Promise.all([readProgress(options.db, options), options.lockReason(), options.breakers()]);
    void reply.header("refresh", "10");
    return sendPage(reply, 200, page("Progress", progressBody(report, options.chartMinutes, lock, breakers), navigation(req.principal)));
  });
}

function progressBody(r: ProgressReport, chartMinutes: number, lock: string | null, breakers: BreakerView[] | null): SafeHtml {
  const p = r.progress;
  const pct = p.sourceFiles > 0 ? Math.floor((r.finished / p.sourceFiles) * 1000) / 10 : 0;
  const open = (breakers ?? []).filter((b) => b.open);
  return html`${lock === null ? "" : html`<div class="banner" role="status"><strong>API locked</strong> (maintenance): ${lock}</div>`}
${open.map((b) => html`<div class="banner" role="alert"><strong>Link breaker open</strong>: <code>${b.link}</code> is paused (files stay pending, none fails) since ${b.openedAt ?? "?"}: ${b.reason ?? ""}. Next probe in ${duration(b.nextProbeInSeconds ?? 0)}${b.failedProbes ? ` (${b.failedProbes} failed so far)` : ""}.</div>`)}
<h1>Migration progress</h1>
<section><h2>Overall</h2><table>
<tr><th>files finished</th><td class="n">${num(r.finished)} / ${num(p.sourceFiles)} (${pct}%)</td></tr>
<tr><th>migrated</th><td class="n">${num(p.files.SUCCESS)} files, ${bytes(p.bytesMigrated)} of ${bytes(p.sourceBytes)}</td></tr>
<tr><th>failed</th><td class="n">${num(p.files.FAIL)} (${num(p.failedFinal)} for good)</td></tr>
<tr><th>rate</th><td class="n">${r.rate === null ? "–" : `${r.rate.toFixed(1)} files/s`}</td></tr>
<tr><th>ETA</th><td class="n">${r.etaSeconds === null ? "–" : duration(r.etaSeconds)}</td></tr>
</table></section>
<div class="grid">
<section><h2>Ranges by status</h2>${table(["status", "ranges", "files ok", "files failed"], r.ranges.map((x) => [x.status, num(x.ranges), num(x.filesSucceeded), num(x.filesFailed)]))}</section>
<section><h2>Files by status</h2>${table(["status", "files", "bytes"], r.files.map((x) => [x.status, num(x.count), bytes(x.bytes)]))}</section>
<section><h2>Retries by count</h2>${table(["retries", "status", "files"], r.retries.map((x) => [String(x.retryCount), x.status, num(x.files)]))}</section>
</div>
<section><h2>Throughput (files per minute, last ${chartMinutes} min)</h2>${throughputChart(r.throughput, chartMinutes, r.at)}</section>
<section><h2>Transfers by link (now: last ${LINK_WINDOW_SECONDS} s; average: whole run)</h2>${table(
    ["source → destination", "files", "bytes", "now", "average"],
    r.links.map((l) => [
      html`<code>${l.source}</code> → <code>${l.destination}</code>`,
      num(l.files),
      bytes(l.bytes),
      `${l.filesPerSec.toFixed(1)} files/s, ${bytes(l.bytesPerSec)}/s`,
      l.averageFilesPerSec === null || l.averageBytesPerSec === null ? "–" : `${l.averageFilesPerSec.toFixed(1)} files/s, ${bytes(l.averageBytesPerSec)}/s`,
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
<section><h2>Failures by category</h2>${table(["category", "files", "example"], r.failures.map((f) => [f.category, num(f.files), html`<code>${f.exampleUri ?? ""}</code><br><span class="muted">${f.exampleMessage ?? ""}</span>`]))}</section>
<section><h2>Workers holding ranges</h2>${table(["worker", "ranges", "last heartbeat"], r.workers.map((w) => [w.owner, num(w.ranges), html`${w.lastHeartbeat ? w.lastHeartbeat.toISOString() : "never"}${w.stale ? html` <span class="bad">stale</span>` : ""}`]))}</section>
<p class="muted">As of ${r.at.toISOString()} · refreshes every 10 s · <a href="/progress.json">JSON</a></p>`;
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
