import { createPool } from "@fleet/db/pool";
import { createDashboardFixture, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

describe("operations API: callbackUrl", () => {
  let fx: DashboardFixture;
  let auth: Record<string, string>;
  const submit = (body: unknown) => send(fx.dashboard.url, "/api/operations", { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify(body) });

  beforeAll(async () => {
    fx = await createDashboardFixture("callbacks", { WEBHOOK_ALLOWED_URLS: "https://site.example/fleet/hooks,http://127.0.0.1:8999/" });
    auth = { authorization: `Bearer ${fx.apiToken}` };
  });
  afterAll(() => fx?.close());

  it("records an allowed callback for the submitted operation; refuses others with a clear error and submits nothing", async () => {
    const res = await submit({ name: "seed-ranges", opts: { callbackUrl: "https://site.example/fleet/hooks/run?ticket=42", delayMs: 60_000 } });
    expect(res.status).toBe(202);
    const op = (await res.json()) as { id: string; callbackUrl: string };
    expect(op.callbackUrl).toBe("https://site.example/fleet/hooks/run?ticket=42");
    const db = createPool({ connectionString: fx.db.url, max: 1 });
    const { rows } = await db.query<{ operation_id: string; url: string; registered_by: string; fired_at: Date | null }>(`SELECT operation_id, url, registered_by, fired_at FROM operation_callbacks`).finally(() => db.end());
    expect(rows).toEqual([{ operation_id: op.id, url: "https://site.example/fleet/hooks/run?ticket=42", registered_by: "token:ci", fired_at: null }]);

    const refused: Array<[string, RegExp]> = [
      ["https://site.example/fleet/hooksy", /callbackUrl refused: https:\/\/site\.example\/fleet\/hooksy is not in WEBHOOK_ALLOWED_URLS/],
      ["https://evil.example/fleet/hooks", /is not in WEBHOOK_ALLOWED_URLS/],
      ["http://site.example/fleet/hooks", /is not in WEBHOOK_ALLOWED_URLS/],
      ["https://user:pw@site.example/fleet/hooks", /credentials are not allowed/],
      ["file:///etc/passwd", /file: URLs are not allowed/],
      ["not a url", /is not a URL/],
    ];
    // A value that does not parse is not echoed: it may carry a token.
    const unparsed = await submit({ name: "seed-ranges", opts: { callbackUrl: "https//site.example/fleet/hooks?token=s3cr3t-t0ken" } });
    expect(unparsed.status).toBe(400);
    const unparsedBody = await unparsed.text();
    expect(unparsedBody).toMatch(/is not a URL/);
    expect(unparsedBody).not.toContain("s3cr3t-t0ken");
    for (const [callbackUrl, message] of refused) {
      const r = await submit({ name: "seed-ranges", opts: { callbackUrl } });
      expect(r.status).toBe(400);
      expect(((await r.json()) as { error: string }).error).toMatch(message);
    }
    expect(await fx.dashboard.jobs.queue("maintenance").getJobCounts("waiting", "delayed")).toEqual({ waiting: 0, delayed: 1 });
  });

  it("a submission withdrawn because its callback could not be recorded leaves no kept request (a durable kind's)", async () => {
    // Found by review: the job was removed and its job_requests row left, so the recovery pass
    // looked at it for a minute, and a Redis loss in that minute queued the withdrawn command.
    const db = createPool({ connectionString: fx.db.url, max: 1 });
    try {
      // The database refuses the callback's row (a real refusal: a constraint no row meets).
      await db.query("ALTER TABLE operation_callbacks ADD CONSTRAINT b_refuse_all CHECK (false) NOT VALID");
      const res = await submit({ name: "remote-command", data: { server: "nas1", command: "export" }, opts: { callbackUrl: "https://site.example/fleet/hooks/x" } });
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error: string }).error).toMatch(/nothing was submitted/);
      expect(await fx.dashboard.jobs.queue("remote").getJobCounts("waiting", "delayed", "active")).toEqual({ waiting: 0, delayed: 0, active: 0 });
      expect((await db.query("SELECT id FROM job_requests")).rows).toEqual([]);

      // The request cannot be forgotten either: the job stays queued with its request, and the
      // caller is told so (never "nothing was submitted" with a request left to be replayed).
      await db.query(`CREATE FUNCTION b_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'b: refused'; END $$`);
      await db.query("CREATE TRIGGER b_refuse_delete BEFORE DELETE ON job_requests FOR EACH ROW EXECUTE FUNCTION b_refuse_delete()");
      const kept = await submit({ name: "remote-command", data: { server: "nas1", command: "export" }, opts: { callbackUrl: "https://site.example/fleet/hooks/x" } });
      expect(kept.status).toBe(500);
      const { error } = (await kept.json()) as { error: string };
      const id = /operation (\S+) is queued/.exec(error)?.[1];
      expect(id).toBeDefined();
      expect(await fx.dashboard.jobs.queue("remote").getJobState(id!)).toBe("waiting");
      expect((await db.query("SELECT id FROM job_requests")).rows).toEqual([{ id }]);
    } finally {
      await db.query("DROP TRIGGER IF EXISTS b_refuse_delete ON job_requests").catch(() => undefined);
      await db.query("DROP FUNCTION IF EXISTS b_refuse_delete()").catch(() => undefined);
      await db.query("ALTER TABLE operation_callbacks DROP CONSTRAINT IF EXISTS b_refuse_all").catch(() => undefined);
      await db.end();
    }
  });
});
