import { html } from "./html";
import type { SafeHtml } from "./html";

/** One bar: files finished in the minute or hour starting at `at`. */
export interface ThroughputBar {
  at: Date;
  succeeded: number;
  failed: number;
}

const BUCKET_MS = { minute: 60_000, hour: 3_600_000 } as const;

/**
 * Files finished per minute or per (UTC) hour as an inline SVG bar chart (succeeded stacked
 * under failed), the last `buckets` of them up to now's: no script and no chart library, so
 * the page's CSP can forbid scripts entirely.
 */
export function throughputChart(rows: readonly ThroughputBar[], span: { buckets: number; unit: keyof typeof BUCKET_MS }, now: Date): SafeHtml {
  const width = 720;
  const height = 160;
  const { buckets, unit } = span;
  const size = BUCKET_MS[unit];
  const end = Math.floor(now.getTime() / size) * size;
  const start = end - (buckets - 1) * size;
  const byBucket = new Map(rows.map((r) => [r.at.getTime(), r]));
  const max = Math.max(1, ...rows.map((r) => r.succeeded + r.failed));
  const barWidth = width / buckets;
  const bars: SafeHtml[] = [];
  for (let i = 0; i < buckets; i++) {
    const row = byBucket.get(start + i * size);
    if (!row) continue;
    const ok = (row.succeeded / max) * height;
    const bad = (row.failed / max) * height;
    const x = (i * barWidth).toFixed(1);
    const w = Math.max(barWidth - 1, 1).toFixed(1);
    const when = unit === "minute" ? row.at.toISOString().slice(11, 16) : `${row.at.toISOString().slice(0, 10)} ${row.at.toISOString().slice(11, 13)}:00`;
    const label = `${when} UTC: ${row.succeeded} succeeded, ${row.failed} failed`;
    bars.push(html`<g><title>${label}</title><rect x="${x}" y="${(height - ok).toFixed(1)}" width="${w}" height="${ok.toFixed(1)}" fill="#2e7d32"></rect><rect x="${x}" y="${(height - ok - bad).toFixed(1)}" width="${w}" height="${bad.toFixed(1)}" fill="#c62828"></rect></g>`);
  }
  const ago = unit === "minute" ? `${buckets} min` : `${buckets} h`;
  return html`<svg role="img" aria-label="files finished per ${unit}, last ${ago}" viewBox="0 0 ${width} ${height + 16}" width="100%" style="max-width:${width}px">
<line x1="0" y1="${height}" x2="${width}" y2="${height}" stroke="#99a"></line>${bars}
<text x="0" y="${height + 14}" font-size="11" fill="#66707a">-${ago}</text><text x="${width}" y="${height + 14}" font-size="11" fill="#66707a" text-anchor="end">now · peak ${max}/${unit === "minute" ? "min" : "h"}</text></svg>`;
}
