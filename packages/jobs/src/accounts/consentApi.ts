import { PermanentError, RetryableError } from "@fleet/core/errors";
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

  for (let attempt = 0; ; attempt++) {
    options.signal.throwIfAborted();
    let status: number | string;
    let retryAfterMs = 0;
    try {
      const response = await fetchSameOrigin(url, { headers, signal: AbortSignal.any([options.signal, AbortSignal.timeout(consent.timeoutMs)]) });
      status = response.status;
      if (response.ok) return parsePage(await readBounded(response, consent), response.headers.get("content-type"));
      await response.body?.cancel();
      if (status !== 429 && status < 500) {
        throw new PermanentError(status === 401 || status === 403 ? "auth-failed" : "bad-config", `consent API answered ${status} (check ACCOUNTS_CONSENT_URL and the auth header)`);
      }
      retryAfterMs = retryAfter(response.headers.get("retry-after"));
    } catch (err) {
      if (err instanceof PermanentError || options.signal.aborted) throw err;
      status = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
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

/**
 * fetch that follows redirects within the consent API's origin only. fetch itself follows any
 * redirect and drops only `Authorization` on the way to another origin: a token in another
 * header (ACCOUNTS_CONSENT_AUTH_HEADER=X-Api-Key) went to wherever a redirect pointed, to
 * another host or from https to plain http (found by a security review). A redirect out of the
 * origin is a configuration error: the token is never sent there.
 */
async function fetchSameOrigin(url: URL, init: { headers: Record<string, string>; signal: AbortSignal }): Promise<Response> {
  let current = url;
  for (let hop = 0; ; hop++) {
    const response = await fetch(current, { ...init, redirect: "manual" });
    if (response.status < 300 || response.status > 399 || response.status === 304) return response;
    await response.body?.cancel();
    const location = response.headers.get("location");
    let next: URL | undefined;
    try {
      next = location === null ? undefined : new URL(location, current);
    } catch {
      next = undefined;
    }
    if (!next) throw new PermanentError("bad-config", `consent API answered ${response.status} without a usable Location (check ACCOUNTS_CONSENT_URL)`);
    if (next.origin !== url.origin) {
      throw new PermanentError("bad-config", `consent API redirected (${response.status}) to another origin, ${next.origin}: the auth header is not sent there; set ACCOUNTS_CONSENT_URL to the URL to use`);
    }
    if (hop >= MAX_REDIRECTS) throw new PermanentError("bad-config", `consent API redirected more than ${MAX_REDIRECTS} times (check ACCOUNTS_CONSENT_URL)`);
    current = next;
  }
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
async function readBounded(response: Response, consent: AccountSettings["consent"]): Promise<string> {
  const max = consent.maxPageBytes;
  const tooLarge = () =>
    new PermanentError("invalid-payload", `consent API answered a page larger than ${max} bytes (ACCOUNTS_CONSENT_MAX_PAGE_BYTES; limit=${consent.pageSize} asked): does it honour \`limit\`?`);
  const declared = Number(response.headers.get("content-length") ?? NaN);
  if (declared > max) {
    await response.body?.cancel();
    throw tooLarge();
  }
  if (!response.body) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
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
