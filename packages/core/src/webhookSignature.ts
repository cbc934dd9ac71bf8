import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * How Fleet signs what it POSTs (completion webhooks; alert webhooks are unsigned, see docs/architecture.md):
 *   X-Fleet-Timestamp: <unix seconds>
 *   X-Fleet-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
 * The timestamp is inside the signed text, so a captured request cannot be replayed later than
 * the receiver's tolerance; the receiver must verify over the raw bytes, before parsing JSON.
 */
export const SIGNATURE_HEADER = "x-fleet-signature";
export const TIMESTAMP_HEADER = "x-fleet-timestamp";

export function signWebhook(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`;
}

/** For receivers (and tests): true when the signature matches and the timestamp is recent. */
export function verifyWebhook(secret: string, headers: { timestamp: string | undefined; signature: string | undefined }, body: string, nowMs = Date.now(), toleranceSec = 300): boolean {
  const ts = Number(headers.timestamp);
  if (!Number.isInteger(ts) || Math.abs(nowMs / 1000 - ts) > toleranceSec || !headers.signature) return false;
  const expected = Buffer.from(signWebhook(secret, ts, body));
  const given = Buffer.from(headers.signature);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

/**
 * The URL allow-list (WEBHOOK_ALLOWED_URLS): each entry is an http(s) URL prefix. A URL is
 * allowed when scheme, host and port equal an entry's and its path starts with the entry's
 * path at a segment boundary (`https://h/hooks` allows `/hooks` and `/hooks/x`, not `/hooksy`).
 * URLs with user:password are refused: credentials belong in the signature, not in a URL that
 * ends up in logs and the history.
 */
export function webhookUrlProblem(url: string, allowed: readonly string[]): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    // Not echoed: a URL that fails to parse may still carry a token (logs, 400 bodies, history).
    return "the value is not a URL";
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return `${u.protocol} URLs are not allowed (http or https only)`;
  if (u.username || u.password) return "URLs with credentials are not allowed";
  // An encoded '/', '\' or '.' in the path: many servers decode it and then resolve `..`, so
  // `/hooks/..%2fadmin` would pass the prefix check below and reach /admin (found by a security
  // review). No webhook needs one.
  if (/%(2f|5c|2e)/i.test(u.pathname)) return "encoded '/', '\\' or '.' in the path are not allowed";
  if (allowed.length === 0) return "webhooks are not enabled (WEBHOOK_ALLOWED_URLS is empty)";
  for (const entry of allowed) {
    let a: URL;
    try {
      a = new URL(entry);
    } catch {
      continue;
    }
    if (a.protocol !== u.protocol || a.host !== u.host) continue;
    const prefix = a.pathname;
    if (prefix === "/" || u.pathname === prefix || u.pathname.startsWith(prefix.endsWith("/") ? prefix : `${prefix}/`)) return undefined;
  }
  return `${u.origin}${u.pathname} is not in WEBHOOK_ALLOWED_URLS`;
}

/** A URL as logs and the history show it: no query string (tokens hide there), no credentials. */
export function displayUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return "(invalid URL)";
  }
}
