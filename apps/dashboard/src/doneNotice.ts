import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * The one-line notice a page shows after a form's redirect ("re-queued 3 files", "X: a → b"),
 * carried in the URL as `done=<text>&sig=<hmac>`. Signed with DASHBOARD_SESSION_SECRET, so the
 * page shows only what the dashboard itself wrote: unsigned, any (escaped) text a crafted link
 * carried appeared in the page's status banner, a fake "your session expired, go to …" for
 * whoever followed it (found by a security review).
 */
export class DoneNotices {
  constructor(private readonly key: string) {}

  /** `done=…&sig=…` for a redirect to a page that shows the notice. */
  query(text: string): string {
    const bounded = text.slice(0, 290);
    return `done=${encodeURIComponent(bounded)}&sig=${this.sign(bounded)}`;
  }

  /** The notice of a request's query, if the dashboard signed it; "" otherwise. */
  read(query: unknown): string {
    const q = (query ?? {}) as Record<string, unknown>;
    if (typeof q.done !== "string" || typeof q.sig !== "string") return "";
    const expected = Buffer.from(this.sign(q.done));
    const given = Buffer.from(q.sig);
    return given.length === expected.length && timingSafeEqual(given, expected) ? q.done : "";
  }

  private sign(text: string): string {
    return createHmac("sha256", this.key).update(`done-notice\n${text}`).digest("base64url").slice(0, 22);
  }
}
