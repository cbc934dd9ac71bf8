import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { PASSWORDS, createDashboardFixture, login, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

/**
 * The failures page filtered (by link or text) shows a per-category button "Retry N <category>"
 * whose N counts the filtered files. Pressing it must re-queue those N files — not every failed
 * file of the category in the whole migration.
 */
describe("the failures page's per-category retry under a filter", () => {
  let f: DashboardFixture;
  let db: DbPool;
  let base: string;

  beforeAll(async () => {
    f = await createDashboardFixture("retry-scope");
    db = createPool({ connectionString: f.db.url, max: 2 });
    base = f.dashboard.url;
  });
  afterAll(async () => {
    await db?.end();
    await f?.close();
  });

  it("re-queues exactly the files the button counted", async () => {
    // Two network failures under projectA/, three under projectB/.
    await db.query(
      `INSERT INTO migration_files (file_id, old_uri, file_name, size, status, error_category, error_message, last_attempt_date)
       SELECT g, 'file:///src/' || CASE WHEN g <= 2 THEN 'projectA' ELSE 'projectB' END || '/f' || g, 'f' || g, 1, 'FAIL', 'network', 'ECONNRESET', now() - interval '1 hour'
         FROM generate_series(1, 5) g`,
    );
    const { jar } = await login(base, "alice", PASSWORDS.alice);
    const self = "/failures?text=projectA";
    const page = await (await send(base, self, { jar })).text();
    expect(page).toContain("2 files");
    const button = /<button type="submit" name="retry-category" value="network">Retry (\d+) network<\/button>/.exec(page);
    expect(button?.[1]).toBe("2");
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page)![1]!;
    const back = /name="back" value="([^"]+)"/.exec(page)![1]!.replace(/&amp;/g, "&");

    // The operator presses "Retry 2 network".
    const res = await send(base, "/failures/retry", {
      jar,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ _csrf: csrf, back, category: "network", "retry-category": "network" }).toString(),
    });
    expect(res.status).toBe(303);
    const marked = await db.query<{ file_id: string }>(`SELECT file_id FROM migration_files WHERE retry_requested_at IS NOT NULL ORDER BY file_id`);
    expect(marked.rows.map((r) => Number(r.file_id))).toEqual([1, 2]);

    // A `back` no Location header can carry (CR/LF, a character outside printable ASCII) goes
    // back to /failures: the redirect used to fail after the retry had run.
    for (const bad of ["/failures?x=\r\nSet-Cookie: a=b", "/failures?x=é"]) {
      const again = await send(base, "/failures/retry", {
        jar,
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ _csrf: csrf, back: bad, category: "network", "retry-category": "network" }).toString(),
      });
      expect([again.status, again.headers.get("location")?.startsWith("/failures?done="), again.headers.get("set-cookie") ?? ""]).toEqual([303, true, expect.not.stringContaining("a=b")]);
    }
  });

  it("refuses a category filter that names no category, saying which ones exist", async () => {
    const { jar } = await login(base, "alice", PASSWORDS.alice);
    for (const path of ["/failures.json?category=nonsense", "/failures?category=network&category=nonsense"]) {
      const res = await send(base, path, { jar });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: string }).error).toMatch(/^bad filter: .*unknown category; the categories are network, timeout, .*not-found/);
    }
    expect((await send(base, "/failures.json?category=killed", { jar })).status).toBe(200);
    // One file's attempts as JSON.
    const file = (await (await send(base, "/failures/file/3.json", { jar })).json()) as { file: { fileId: string | number; category: string }; attempts: unknown[] };
    expect([Number(file.file.fileId), file.file.category, file.attempts]).toEqual([3, "network", []]);
    expect((await send(base, "/failures/file/999.json", { jar })).status).toBe(404);
  });
});
