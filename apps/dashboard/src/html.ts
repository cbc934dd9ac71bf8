/**
 * Server-rendered HTML: every value goes through `escapeHtml` (file names and error messages
 * are hostile input), and pages share one layout with a strict Content-Security-Policy.
 */
const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "`": "&#96;" };

export function escapeHtml(value: unknown): string {
  return String(value ?? "").replace(/[&<>"'`]/g, (c) => ESCAPES[c]!);
}

/** Markup already escaped by its builder. */
export interface SafeHtml {
  readonly html: string;
}

export function raw(html: string): SafeHtml {
  return { html };
}

/** Tagged template: interpolations are escaped unless they are SafeHtml (or arrays of it). */
export function html(strings: TemplateStringsArray, ...values: unknown[]): SafeHtml {
  let out = strings[0]!;
  values.forEach((value, i) => {
    out += render(value) + strings[i + 1]!;
  });
  return raw(out);
}

function render(value: unknown): string {
  if (Array.isArray(value)) return value.map(render).join("");
  if (value && typeof value === "object" && "html" in value) return (value as SafeHtml).html;
  return escapeHtml(value);
}

/** No scripts at all, styles only inline in the page: an injected tag can neither run nor load. */
export const PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export function page(title: string, body: SafeHtml, nav?: SafeHtml): string {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Fleet</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f5f6f8}
header{background:#1d232a;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center}
header a,header button{color:#cfe3ff;text-decoration:none;background:none;border:0;font:inherit;cursor:pointer;padding:0}
main{padding:1rem 1.2rem;max-width:1200px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:.8rem 1rem;margin:0 0 1rem}
h1{font-size:1.3rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:0 0 .6rem}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eef0f2;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:1rem}
.muted{color:#66707a}.bad{color:#b3261e}.banner{background:#fff4ce;border:1px solid #e0c060;padding:.6rem 1rem;border-radius:6px;margin-bottom:1rem}
form.login{max-width:320px;display:grid;gap:.6rem}input{font:inherit;padding:.4rem}code{word-break:break-all}
</style></head>
<body><header><strong>Fleet</strong>${nav ?? ""}</header><main>${body}</main></body></html>`.html;
}
