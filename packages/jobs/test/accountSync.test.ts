import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { syncConsents, CONSENT_CURSOR_KEY } from "../src/accounts/syncConsents";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { startConsentApi } from "./consentApiFixture";
import type { ConsentFixture } from "./consentApiFixture";

/** Queue sync against a real HTTP consent API on loopback and a real database. */

const consent = (id: string, email: string | undefined, extra: Record<string, unknown> = {}) => ({
  id,
  ...(email === undefined ? {} : { email }),
  name: `User ${id}`,
  consentedAt: `2026-11-2${id.length % 9}T10:00:00.000Z`,
  ...extra,
});

let h: PipelineHarness;
let api: ConsentFixture;

beforeEach(async () => {
  api = await startConsentApi([
    [consent("a1", "a1@example.org"), consent("a2", "a2@example.org", { attributes: { username: "a2" } })],
    [consent("a3", undefined), consent("a4", "a4@example.org"), consent("a4", "a4-again@example.org")],
    [consent("a5", "A1@example.org"), consent("a6", "not-an-email"), consent("a7", "a7@example.org")],
  ]);
  h = await createPipelineHarness("account-sync", {
    ACCOUNTS_CONSENT_URL: api.url,
    ACCOUNTS_CONSENT_TOKEN: "Bearer s3cret",
    ACCOUNTS_CONSENT_PAGE_SIZE: "3",
    ACCOUNTS_CONSENT_BACKOFF: "10ms,20ms,30ms",
  });
});

afterEach(async () => {
  await h?.close();
  await api?.close();
});

const sync = () => syncConsents({ db: h.runtime.db, consent: h.runtime.deps.accounts.settings.consent, log: h.log, signal: new AbortController().signal, job: "test" });

async function queue() {
  const { rows } = await h.runtime.db.query<{ external_id: string; email: string; status: string; attributes: unknown; updated_at: Date }>(
    `SELECT external_id, email, status, attributes, updated_at FROM migration_queue ORDER BY external_id`,
  );
  return rows;
}

async function cursor() {
  const { rows } = await h.runtime.db.query<{ cursor: string | null; last_error: string | null }>(`SELECT cursor, last_error FROM sync_state WHERE key = $1`, [CONSENT_CURSOR_KEY]);
  return rows[0];
}

describe("queue sync", () => {
  it("pages through the API with the auth header, waits out 429/503, upserts good records and logs bad ones as rejected", async () => {
    api.failures.set("c1", [429, 503]);
    const result = await sync();
    expect(result).toMatchObject({ pages: 3, inserted: 4, rejected: 4 });
    expect((await queue()).map((r) => [r.external_id, r.email, r.status])).toEqual([
      ["a1", "a1@example.org", "QUEUED"],
      ["a2", "a2@example.org", "QUEUED"],
      ["a4", "a4@example.org", "QUEUED"],
      ["a7", "a7@example.org", "QUEUED"],
    ]);
    expect((await queue())[1]!.attributes).toEqual({ username: "a2" });
    expect(api.requests.map((r) => r.cursor)).toEqual([null, "c1", "c1", "c1", "c2"]);
    expect(new Set(api.requests.map((r) => r.headers.authorization))).toEqual(new Set(["Bearer s3cret"]));
    const { rows: rejected } = await h.runtime.db.query<{ subject: string; message: string }>(
      `SELECT subject, message FROM migration_log WHERE message LIKE 'rejected:%' ORDER BY subject`,
    );
    expect(rejected.map((r) => r.subject)).toEqual(["consent:a3", "consent:a4", "consent:a5", "consent:a6"]);
    expect(rejected.find((r) => r.subject === "consent:a5")!.message).toMatch(/duplicate email.*belongs to account a1/);
    expect(rejected.find((r) => r.subject === "consent:a4")!.message).toMatch(/duplicate id/);
    expect(await cursor()).toEqual({ cursor: "c2", last_error: null });
  });

  it("is idempotent: a second run with nothing new changes no row", async () => {
    await sync();
    const before = await queue();
    const again = await sync();
    expect(again).toMatchObject({ inserted: 0, updated: 0 });
    expect(await queue()).toEqual(before);
    // The cursor stayed on the last page, which was read again (new consents get appended there).
    expect(api.requests.slice(-1)[0]!.cursor).toBe("c2");
  });

  it("advances the cursor only past committed pages: an API that fails for good stops the sync and the next run resumes there", async () => {
    api.brokenAt = "c2";
    await expect(sync()).rejects.toMatchObject({ category: "unavailable" });
    // Pages c0 and c1 committed: the cursor names the page to read next.
    expect(await cursor()).toEqual({ cursor: "c2", last_error: expect.stringMatching(/still failing \(500\)/) });
    expect((await queue()).map((r) => r.external_id)).toEqual(["a1", "a2", "a4"]);

    api.brokenAt = undefined;
    const requestsBefore = api.requests.length;
    await sync();
    expect(api.requests.slice(requestsBefore).map((r) => r.cursor)).toEqual(["c2"]);
    expect((await queue()).map((r) => r.external_id)).toEqual(["a1", "a2", "a4", "a7"]);
    expect(await cursor()).toEqual({ cursor: "c2", last_error: null });
  });

  it("does not rewrite accounts that are already scheduled", async () => {
    await sync();
    await h.runtime.db.query(`UPDATE migration_queue SET status = 'SCHEDULED' WHERE external_id = 'a1'`);
    api.pages[0] = [consent("a1", "changed@example.org")];
    await h.runtime.db.query(`UPDATE sync_state SET cursor = NULL WHERE key = $1`, [CONSENT_CURSOR_KEY]);
    const result = await sync();
    expect(result.updated).toBe(0);
    expect((await queue())[0]).toMatchObject({ external_id: "a1", email: "a1@example.org", status: "SCHEDULED" });
  });

  it("fails at once, without retrying, when the API refuses the credentials", async () => {
    api.failures.set("c0", [401]);
    await expect(sync()).rejects.toMatchObject({ category: "auth-failed" });
    expect(api.requests).toHaveLength(1);
  });

  // Found by probing: an API that marks the end of its list by answering the cursor it was asked
  // with (not null) kept the sync asking for the same page up to 100,000 times, holding a
  // maintenance slot for hours and hammering the API. The same cursor back is the end for now.
  it("stops when the API answers the cursor it was asked with: the end of the list for now, asked again next sync", async () => {
    let requests = 0;
    const looping = createServer((req, res) => {
      requests++;
      const cursor = new URL(req.url ?? "/", "http://x").searchParams.get("cursor");
      if (requests > 20) {
        res.writeHead(401).end();
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ items: cursor ? [] : [consent("l1", "l1@example.org")], nextCursor: "end-1" }));
    });
    await new Promise<void>((r) => looping.listen(0, "127.0.0.1", r));
    try {
      const settings = { ...h.runtime.deps.accounts.settings.consent, url: `http://127.0.0.1:${(looping.address() as AddressInfo).port}/c` };
      const run = () => syncConsents({ db: h.runtime.db, consent: settings, log: h.log, signal: new AbortController().signal, job: "test" });
      expect(await run()).toMatchObject({ pages: 2, inserted: 1, cursor: "end-1" });
      expect(requests).toBe(2);
      expect(await run()).toMatchObject({ pages: 1, inserted: 0, cursor: "end-1" });
      expect(requests).toBe(3);
      expect((await queue()).map((r) => r.external_id)).toEqual(["l1"]);
    } finally {
      await new Promise<void>((r) => looping.close(() => r()));
    }
  });
});
