import { z } from "zod";
import type { Logger } from "@fleet/core/logger";
import type { DbPool } from "@fleet/db/pool";
import { inTransaction } from "@fleet/db/pool";
import { lockCursor, ownersOfEmails, readCursor, recordSyncError, saveCursor, upsertConsents } from "@fleet/db/sql/accountQueue";
import type { ConsentRow } from "@fleet/db/sql/accountQueue";
import { writeLog } from "@fleet/db/sql/log";
import type { LogEntry } from "@fleet/db/sql/log";
import { PermanentError, RetryableError } from "@fleet/core/errors";
import type { AccountSettings } from "./accountSettings";
import { fetchConsentPage } from "./consentApi";
import { applyRevocations } from "./revocations";

/** The sync_state key of the consent cursor. */
export const CONSENT_CURSOR_KEY = "accounts:consents";

/** A consent record as the API sends it; anything else is rejected (logged, not fatal). */
const consentRecord = z.object({
  id: z.union([z.string().min(1), z.number().int()]).transform(String),
  email: z.string().trim().email(),
  name: z.string().trim().min(1).max(500),
  consentedAt: z.string().datetime({ offset: true }).transform((s) => new Date(s)),
  attributes: z.record(z.string().regex(/^[A-Za-z0-9_]{1,40}$/), z.string().max(1000)).optional(),
  /** Set when the user withdrew the consent (the record stays in the list, marked). */
  revokedAt: z.string().datetime({ offset: true }).nullable().optional(),
});

export interface SyncResult {
  pages: number;
  inserted: number;
  updated: number;
  unchanged: number;
  rejected: number;
  /** Consents marked revoked in this run that took an account out of the queue or its batch. */
  revoked: number;
  /** Accounts revoked while their steps ran, to stop (ACCOUNTS_REVOKE_DURING_RUN=stop). */
  stopRunning: number[];
  /** Revoked accounts that were in the directory group (group removal to run). */
  cleanup: number[];
  cursor: string | null;
}

export interface SyncOptions {
  db: DbPool;
  consent: AccountSettings["consent"];
  log: Logger;
  signal: AbortSignal;
  job?: string;
  /** Safety bound on pages per run (a cursor loop in the API must not spin forever). */
  maxPages?: number;
  /** What a revocation does to an account whose steps are running. */
  revokeDuringRun?: "finish" | "stop";
  notifyWindow?: string;
}

/**
 * Pulls consents page by page from the cursor in sync_state. Each page is validated, its
 * good records upserted and the cursor advanced in ONE transaction, and only if the cursor is
 * still the one the page was fetched with: a crash loses at most the page in flight (fetched
 * again next time), and a concurrent sync cannot apply a page twice or skip one. Bad records
 * (no or invalid email, an email another account already has, a duplicate id in the page) are
 * logged to migration_log as rejected and the sync goes on. A record with `revokedAt` set
 * withdraws the account (see revocations.ts), in the same transaction.
 */
export async function syncConsents(options: SyncOptions): Promise<SyncResult> {
  const { db, consent, log, signal } = options;
  if (!consent.url) throw new PermanentError("bad-config", "queue sync needs ACCOUNTS_CONSENT_URL: it is not set");
  const result: SyncResult = { pages: 0, inserted: 0, updated: 0, unchanged: 0, rejected: 0, revoked: 0, stopRunning: [], cleanup: [], cursor: await readCursor(db, CONSENT_CURSOR_KEY) };
  const maxPages = options.maxPages ?? 100_000;
  try {
    while (result.pages < maxPages) {
      const fetchedWith = result.cursor;
      const page = await fetchConsentPage(consent, fetchedWith, {
        signal,
        onRetry: (info) => log.warn(info, "consent API busy or failing: waiting before asking again"),
      });
      const { good, rejects, revocations } = validatePage(page.items);
      const applied = await inTransaction(db, async (tx) => {
        const current = await lockCursor(tx, CONSENT_CURSOR_KEY);
        if (current !== fetchedWith) return false;
        const owners = await ownersOfEmails(tx, good.map((g) => g.email));
        const rows: ConsentRow[] = [];
        for (const g of good) {
          const owner = owners.get(g.email.toLowerCase());
          if (owner !== undefined && owner !== g.externalId) rejects.push({ id: g.externalId, reason: `duplicate email: ${g.email} belongs to account ${owner}` });
          else rows.push(g);
        }
        const revoked = await applyRevocations(tx, revocations, options.revokeDuringRun ?? "finish", options.notifyWindow ?? "", options.job);
        result.revoked += revoked.revoked;
        result.stopRunning.push(...revoked.stopRunning);
        result.cleanup.push(...revoked.cleanup);
        const upserted = await upsertConsents(tx, rows);
        result.inserted += upserted.inserted;
        result.updated += upserted.updated;
        result.unchanged += upserted.unchanged;
        const entries: LogEntry[] = rejects.map((r) => ({
          level: "warn",
          ...(options.job ? { job: options.job } : {}),
          subject: `consent:${r.id ?? "?"}`,
          message: `rejected: ${r.reason}`,
        }));
        await writeLog(tx, entries);
        await saveCursor(tx, CONSENT_CURSOR_KEY, page.nextCursor ?? fetchedWith);
        return true;
      });
      if (!applied) throw new RetryableError("lock-contention", "another queue sync moved the consent cursor meanwhile; this one stops");
      result.pages++;
      result.rejected += rejects.length;
      if (rejects.length > 0) log.warn({ rejected: rejects.length, examples: rejects.slice(0, 3) }, "consent records rejected");
      log.info({ page: result.pages, items: page.items.length, rejected: rejects.length }, "consent page committed");
      if (page.nextCursor === null) break;
      // The cursor it was asked with, back: some APIs mark the end of their list so. Asking again
      // would get the same page for ever (found by probing: up to maxPages requests, for hours).
      // The end for now, as null is: the next sync asks there again.
      if (page.nextCursor === fetchedWith) {
        log.info({ cursor: fetchedWith }, "consent API answered the cursor it was asked with: the end of the list for now");
        break;
      }
      result.cursor = page.nextCursor;
    }
    result.cursor = await readCursor(db, CONSENT_CURSOR_KEY);
    return result;
  } catch (err) {
    await recordSyncError(db, CONSENT_CURSOR_KEY, (err as Error).message).catch((e: unknown) => log.warn({ err: e }, "could not record the sync error"));
    throw err;
  }
}

interface Reject {
  id: string | undefined;
  reason: string;
}

function validatePage(items: readonly unknown[]): { good: ConsentRow[]; rejects: Reject[]; revocations: string[] } {
  const good: ConsentRow[] = [];
  const rejects: Reject[] = [];
  const revocations: string[] = [];
  const seenIds = new Set<string>();
  const seenEmails = new Set<string>();
  for (const item of items) {
    const parsed = consentRecord.safeParse(item);
    const rawId = (item as { id?: unknown } | null)?.id;
    const id = typeof rawId === "string" || typeof rawId === "number" ? String(rawId).slice(0, 200) : undefined;
    if (!parsed.success) {
      rejects.push({ id, reason: parsed.error.issues.map((i) => `${i.path.join(".") || "record"}: ${i.message}`).join("; ") });
      continue;
    }
    const r = parsed.data;
    if (r.revokedAt) {
      revocations.push(r.id);
      continue;
    }
    const email = r.email.toLowerCase();
    if (seenIds.has(r.id)) {
      rejects.push({ id: r.id, reason: "duplicate id in the same page" });
      continue;
    }
    if (seenEmails.has(email)) {
      rejects.push({ id: r.id, reason: `duplicate email in the same page: ${r.email}` });
      continue;
    }
    seenIds.add(r.id);
    seenEmails.add(email);
    good.push({ externalId: r.id, email: r.email, name: r.name, consentAt: r.consentedAt, attributes: r.attributes ?? null });
  }
  return { good, rejects, revocations };
}
