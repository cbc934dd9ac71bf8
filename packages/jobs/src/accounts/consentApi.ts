import { PermanentError, RetryableError } from "@fleet/core/errors";
import type { IncomingMessage } from "node:http";
import { getPinned, systemLookup, webhookAddress } from "../webhooks/webhookAddress";
import type { AddressPolicy } from "../webhooks/webhookAddress";
import type { AccountSettings } from "./accountSettings";

/**
 * The external consent API: `GET <url>?limit=N[&cursor=C]` with the configured auth header,
 * answering `{ "items": [...], "nextCursor": "…" | null }`. nextCursor null means "the end of
 * the list for now": the cursor stays where the last page started, so the next sync asks for
 * that page again and picks up what was appended to it (see docs/accounts.md). 429, 5xx and
 * network errors are waited out (Retry-After honoured, bounded by ACCOUNTS_CONSENT_BACKOFF);
 * other 4xx are permanent (wrong URL or credentials), and so is a 200 whose body is not that
 * shape: the message says what was wrong, and retrying a contract violation cannot help. So is
 * a page larger than ACCOUNTS_CONSENT_MAX_PAGE_BYTES: the body is read up to that bound and no
 * further (found by probing: an API that ignored `limit` answered 700 MB, read whole into a
 * worker of 1 GiB, which the kernel killed; the job's next worker died the same way).
 */
export interface ConsentPage {
  items: unknown[];
  nextCursor: string | null;
}

export interface FetchPageOptions {
  signal: AbortSignal;
  /** Told before each wait, for logs. */
  onRetry?: (info: { status: number | string; waitMs: number; attempt: number }) => void;
}

export async function fetchConsentPage(consent: AccountSettings["consent"], cursor: string | null, options: FetchPageOptions): Promise<ConsentPage> {
  const url = new URL(consent.url);
  url.searchParams.set("limit", String(consent.pageSize));
  if (cursor !== null) url.searchParams.set("cursor", cursor);
  const headers: Record<string, string> = { accept: "application/json" };
  if (consent.token) headers[consent.authHeader] = consent.token;
  const policy = { lookup: consent.lookup ?? systemLookup, privateNetworks: consent.privateNetworks, remedy: CONSENT_REMEDY };

  for (let attempt = 0; ; attempt++) {
    options.signal.throwIfAborted();
    let status: number | string;
    let retryAfterMs = 0;
    try {
      const signal = AbortSignal.any([options.signal, AbortSignal.timeout(consent.timeoutMs)]);
      const response = await fetchSameOrigin(url, { headers, signal }, policy);
      status = response.statusCode ?? 0;
      if (status >= 200 && status < 300) return parsePage(await readBounded(response, consent), response.headers["content-type"] ?? null);
      response.destroy();
      if (status !== 429 && status < 500) {
        throw new PermanentError(status === 401 || status === 403 ? "auth-failed" : "bad-config", `consent API answered ${status} (check ACCOUNTS_CONSENT_URL and the auth header)`);
      }
      retryAfterMs = retryAfter(headerText(response.headers["retry-after"]));
    } catch (err) {
      if (err instanceof PermanentError || options.signal.aborted) throw err;
      const e = err as Error & { code?: string; cause?: { code?: string } };
      status = e.code ?? e.cause?.code ?? e.name;
    }
    const step = consent.backoffMs[attempt];
    if (step === undefined) {
      throw new RetryableError(status === 429 ? "throttled" : "unavailable", `consent API still failing (${status}) after ${attempt + 1} tries`);
    }
    const waitMs = Math.max(step, Math.min(retryAfterMs, 10 * 60_000));
    options.onRetry?.({ status, waitMs, attempt: attempt + 1 });
    await sleep(waitMs, options.signal);
  }
}

const MAX_REDIRECTS = 5;

const CONSENT_REMEDY =
  "the consent API reaches internal addresses by name only when ACCOUNTS_CONSENT_PRIVATE_NETWORKS lists them (or name the IP in ACCOUNTS_CONSENT_URL)";

/**
 * GET that follows redirects within the consent API's origin only, every hop connected to the
 * one address checked for this request. fetch itself follows any redirect and drops only
 * `Authorization` on the way to another origin: a token in another header
 * (ACCOUNTS_CONSENT_AUTH_HEADER=X-Api-Key) went to wherever a redirect pointed, to another
 * host or from https to plain http (found by a security review). A redirect out of the origin
 * is a configuration error: the token is never sent there.
 *
 * Where it connects: the host is resolved once per request and every answer must be outside the
 * internal ranges (loopback, private, link-local with the cloud metadata service, …; see
 * webhookAddress.ts) unless ACCOUNTS_CONSENT_PRIVATE_NETWORKS lists it; an IP literal in
 * ACCOUNTS_CONSENT_URL is taken as written and `localhost` reaches loopback. Before, fetch
 * resolved the name at each request and hop: whoever holds the consent API's DNS (often another
 * organisation) could point it, or rebind it between two hops, at an internal service, which a
 * sync triggered at will (`accounts-sync` by any `submit` token) then asked with the consent
 * token, and whose first 120 characters the error quoted into the operation's history, readable
 * with a `read` token (found by probing).
 */
async function fetchSameOrigin(url: URL, init: { headers: Record<string, string>; signal: AbortSignal }, policy: AddressPolicy): Promise<IncomingMessage> {
  const target = await webhookAddress(url, policy, init.signal);
  if ("refused" in target) {
    // A name that does not resolve now may later (a DNS outage): waited out like a network error.
    if (target.unresolved !== undefined) throw Object.assign(new Error(target.refused), { code: target.unresolved });
    throw new PermanentError("bad-config", `consent API refused: ${target.refused}`);
  }
  let current = url;
  for (let hop = 0; ; hop++) {
    const response = await getPinned(current, target, init);
    const status = response.statusCode ?? 0;
    if (status < 300 || status > 399 || status === 304) return response;
    response.destroy();
    const location = headerText(response.headers.location);
    let next: URL | undefined;
    try {
      next = location === null ? undefined : new URL(location, current);
    } catch {
      next = undefined;
    }
    if (!next) throw new PermanentError("bad-config", `consent API answered ${status} without a usable Location (check ACCOUNTS_CONSENT_URL)`);
    if (next.origin !== url.origin) {
      throw new PermanentError("bad-config", `consent API redirected (${status}) to another origin, ${next.origin}: the auth header is not sent there; set ACCOUNTS_CONSENT_URL to the URL to use`);
    }
    if (hop >= MAX_REDIRECTS) throw new PermanentError("bad-config", `consent API redirected more than ${MAX_REDIRECTS} times (check ACCOUNTS_CONSENT_URL)`);
    current = next;
  }
}

function headerText(value: string | string[] | undefined): string | null {
  return value === undefined ? null : Array.isArray(value) ? (value[0] ?? null) : value;
}

/**
 * A page, or a PermanentError("invalid-payload") saying what is wrong with it. A broken page is
 * not a bad record: nothing of it is applied and the cursor stays.
 */
export function parsePage(text: string, contentType: string | null): ConsentPage {
  const where = "consent API answered 200 but not {items: [...], nextCursor: string|null}";
  const excerpt = JSON.stringify(text.slice(0, 120));
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new PermanentError("invalid-payload", `${where}: the body is not JSON (content-type ${contentType ?? "none"}; ${(err as Error).message}; starts with ${excerpt})`);
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw new PermanentError("invalid-payload", `${where}: the body is ${Array.isArray(body) ? "an array" : body === null ? "null" : `a ${typeof body}`}, not an object (starts with ${excerpt})`);
  const b = body as { items?: unknown; nextCursor?: unknown };
  if (!Array.isArray(b.items)) throw new PermanentError("invalid-payload", `${where}: "items" is ${b.items === undefined ? "missing" : `a ${typeof b.items}, not an array`}`);
  if (!(b.nextCursor === undefined || b.nextCursor === null || typeof b.nextCursor === "string")) throw new PermanentError("invalid-payload", `${where}: "nextCursor" is a ${typeof b.nextCursor}, not a string or null`);
  return { items: b.items, nextCursor: (b.nextCursor as string | null | undefined) ?? null };
}

/** The body as text, or a PermanentError("invalid-payload") as soon as it is larger than the bound (the rest is not read). */
async function readBounded(response: IncomingMessage, consent: AccountSettings["consent"]): Promise<string> {
  const max = consent.maxPageBytes;
  const tooLarge = () =>
    new PermanentError("invalid-payload", `consent API answered a page larger than ${max} bytes (ACCOUNTS_CONSENT_MAX_PAGE_BYTES; limit=${consent.pageSize} asked): does it honour \`limit\`?`);
  const declared = Number(response.headers["content-length"] ?? NaN);
  if (declared > max) {
    response.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > max) {
      response.destroy();
      throw tooLarge();
    }
    chunks.push(chunk);
  }
  // Cut off mid-answer (the timeout, the server closing): an error, not a short page.
  if (!response.complete) throw Object.assign(new Error("the connection closed before the answer ended"), { code: "ECONNRESET" });
  return Buffer.concat(chunks, size).toString("utf8");
}

function retryAfter(header: string | null): number {
  if (!header) return 0;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(header);
  return Number.isNaN(at) ? 0 : Math.max(0, at - Date.now());
}

/** Resolves after ms, or rejects when the signal aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason instanceof Error ? signal.reason : new RetryableError("interrupted", String(signal.reason)));
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason instanceof Error ? signal.reason : new RetryableError("interrupted", String(signal.reason)));
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
