import type { ThroughputRow } from "@fleet/db/sql/reports";
import { html } from "./html";
import type { SafeHtml } from "./html";

/**
 * Files finished per minute as an inline SVG bar chart (succeeded stacked under failed): no
 * script and no chart library, so the page's CSP can forbid scripts entirely.
 */
export function throughputChart(rows: readonly ThroughputRow[], minutes: number, now: Date): SafeHtml {
  const width = 720;
  const height = 160;
  const end = Math.floor(now.getTime() / 60_000) * 60_000;
  const start = end - (minutes - 1) * 60_000;
  const byMinute = new Map(rows.map((r) => [r.minute.getTime(), r]));
  const max = Math.max(1, ...rows.map((r) => r.succeeded + r.failed));
  const barWidth = width / minutes;
  const bars: SafeHtml[] = [];
  for (let i = 0; i < minutes; i++) {
    const row = byMinute.get(start + i * 60_000);
    if (!row) continue;
    const ok = (row.succeeded / max) * height;
    const bad = (row.failed / max) * height;
    const x = (i * barWidth).toFixed(1);
    const w = Math.max(barWidth - 1, 1).toFixed(1);
    const label = `${new Date(row.minute).toISOString().slice(11, 16)} UTC: ${row.succeeded} succeeded, ${row.failed} failed`;
    bars.push(html`<g><title>${label}</title><rect x="${x}" y="${(height - ok).toFixed(1)}" width="${w}" height="${ok.toFixed(1)}" fill="#2e7d32"></rect><rect x="${x}" y="${(height - ok - bad).toFixed(1)}" width="${w}" height="${bad.toFixed(1)}" fill="#c62828"></rect></g>`);
  }
  return html`<svg role="img" aria-label="files finished per minute, last ${minutes} minutes" viewBox="0 0 ${width} ${height + 16}" width="100%" style="max-width:${width}px">
<line x1="0" y1="${height}" x2="${width}" y2="${height}" stroke="#99a"></line>${bars}
<text x="0" y="${height + 14}" font-size="11" fill="#66707a">-${minutes} min</text><text x="${width}" y="${height + 14}" font-size="11" fill="#66707a" text-anchor="end">now · peak ${max}/min</text></svg>`;
}
