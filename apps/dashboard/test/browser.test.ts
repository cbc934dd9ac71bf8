import { mkdir } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import type { Browser, Page } from "playwright-core";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createPipelineHarness, fileSummary, finishedJob, waitFor } from "../../../packages/jobs/test/pipelineHarness";
import type { PipelineHarness } from "../../../packages/jobs/test/pipelineHarness";
import { PASSWORDS, createDashboardFixture } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

/**
 * Headless Chromium (Debian's, driven by playwright-core) against a dashboard over a real small
 * migration: 30 files, 3 missing at the source, so ranges complete with failures; plus one
 * migrate-range job for a range that does not exist, which fails for good. Screenshots go to
 * test-artifacts/dashboard/.
 */
const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = join(__dirname, "..", "..", "..", "test-artifacts", "dashboard");

describe("dashboard in a browser", () => {
  let harness: PipelineHarness;
  let fx: DashboardFixture;
  let browser: Browser;
  let base: string;
  let failedJobId: string;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)`);
    await mkdir(ARTIFACTS, { recursive: true });
    harness = await createPipelineHarness("dashboard-browser", { BATCH_SIZE: "10" });
    await seedSourceFiles(harness.runtime.db, harness.sourceDir, { count: 30, missing: new Set([3, 14, 25]) });
    const runner = await harness.startRunner();
    await harness.runtime.deps.jobs.enqueue("seed-ranges", {});
    await waitFor(async () => (await fileSummary(harness.runtime)).withoutOutcome === 0, 30_000, "the migration to finish");
    const ghost = await harness.runtime.deps.jobs.enqueue("migrate-range", { rangeId: 999 });
    failedJobId = ghost.id!;
    await finishedJob(harness.runtime, "migration", failedJobId);
    // No runner from here on: a retried job stays waiting, where the test can see it.
    await runner.stop(1_000);
    // Secure cookies, the default: browsers accept them from http://127.0.0.1 and localhost.
    fx = await createDashboardFixture("browser", { DATABASE_URL: harness.config.DATABASE_URL, FLEET_PREFIX: harness.config.FLEET_PREFIX, DASHBOARD_COOKIE_SECURE: "true" });
    base = fx.dashboard.url;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  }, 90_000);
  afterAll(async () => {
    await browser?.close();
    await fx?.close();
    await harness?.close();
  });

  async function signIn(user: string, password: string, next: string): Promise<Page> {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${base}${next}`);
    expect(new URL(page.url()).pathname).toBe("/login");
    await page.fill('input[name="username"]', user);
    await page.fill('input[name="password"]', password);
    await Promise.all([page.waitForURL((url) => url.pathname !== "/login"), page.click('button[type="submit"]')]);
    return page;
  }

  it("viewer: sees the progress page with the migration's numbers and the queues, and has no retry button", async () => {
    const page = await signIn("victor", PASSWORDS.victor, "/progress");
    expect(new URL(page.url()).pathname).toBe("/progress");
    const session = (await page.context().cookies()).find((c) => c.name === "fleet_session");
    expect(session).toMatchObject({ secure: true, httpOnly: true, sameSite: "Strict" });
    const text = await page.textContent("main");
    expect(text).toContain("30 / 30 (100%)");
    expect(text).toContain("27 files");
    expect(text).toMatch(/not-found\s*permanent\s*3/);
    await page.screenshot({ path: join(ARTIFACTS, "viewer-progress.png"), fullPage: true });

    await page.goto(`${base}/queues/`);
    expect(new URL(page.url()).pathname).toBe("/queues/readonly/");
    await page.getByText("migration", { exact: true }).first().waitFor();
    await page.goto(`${base}/queues/readonly/queue/migration?status=failed`);
    await page.getByText(failedJobId, { exact: false }).first().waitFor();
    await page.screenshot({ path: join(ARTIFACTS, "viewer-failed-jobs.png"), fullPage: true });
    // The read-only board offers no retry (nor clean) at all; the operator's board does (below).
    expect(await page.getByRole("button", { name: "Clean all" }).count()).toBe(0);
    expect(await page.getByRole("button", { name: /^retry/i }).count()).toBe(0);
  });

  it("operator: retries the failed job from bull-board (the UI's request carries the CSRF token)", async () => {
    const page = await signIn("alice", PASSWORDS.alice, "/queues/queue/migration?status=failed");
    const queue = fx.dashboard.jobs.queue("migration");
    expect(await queue.getJobState(failedJobId)).toBe("failed");
    await page.getByText(failedJobId, { exact: false }).first().waitFor();
    await page.screenshot({ path: join(ARTIFACTS, "operator-failed-jobs.png"), fullPage: true });
    // bull-board's per-job buttons are unnamed icons; "Retry all" of the failed tab retries this job.
    // bull-board's per-job buttons are unnamed icons; "Retry all" of the failed tab retries this job.
    await page.getByRole("button", { name: "Retry all" }).click();
    const write = page.waitForResponse((r) => r.request().method() !== "GET");
    await page.getByRole("alertdialog").getByRole("button", { name: "Confirm" }).click();
    const response = await write;
    // The UI's write carried the session's CSRF token (axios copies the XSRF-TOKEN cookie) and was accepted.
    expect([new URL(response.url()).pathname, response.status(), response.request().headers()["x-xsrf-token"]]).toEqual([
      "/queues/api/queues/migration/retry/failed",
      200,
      expect.stringMatching(/^[A-Za-z0-9_-]{43}$/),
    ]);
    await waitFor(async () => (await queue.getJobState(failedJobId)) === "waiting", 10_000, "the job to be waiting again");
    await page.screenshot({ path: join(ARTIFACTS, "operator-after-retry.png"), fullPage: true });
  });

  it("operator: the failures page lists the missing files, filters them, shows a file's attempts, and retries the ticked file (CSRF, operation history)", async () => {
    const page = await signIn("alice", PASSWORDS.alice, "/failures");
    expect(new URL(page.url()).pathname).toBe("/failures");
    expect(await page.textContent("#count")).toBe("3 files");
    expect(await page.locator("#files tr").count()).toBe(4);
    await page.screenshot({ path: join(ARTIFACTS, "operator-failures.png"), fullPage: true });

    await page.fill('input[name="text"]', "file-14");
    await Promise.all([page.waitForURL(/text=file-14/), page.getByRole("button", { name: "Filter" }).click()]);
    expect(await page.textContent("#count")).toBe("1 files");
    const fileLink = page.locator("#files td.n a").first();
    const fileId = Number(await fileLink.textContent());
    await Promise.all([page.waitForURL(`**/failures/file/${fileId}`), fileLink.click()]);
    expect(await page.locator("#attempts tr").count()).toBe(2);
    expect(await page.textContent("#attempts")).toMatch(/FAIL\s*not-found\s*open "dir4\/file-14\.bin": ENOENT/);
    await page.screenshot({ path: join(ARTIFACTS, "operator-failure-attempts.png"), fullPage: true });

    await page.goBack();
    await page.check(`input[name="file"][value="${fileId}"]`);
    await page.locator('form:has(#files) input[name="includePermanent"]').check();
    const post = page.waitForRequest((r) => r.method() === "POST");
    await Promise.all([page.waitForURL(/done=/), page.getByRole("button", { name: "Retry selected files" }).click()]);
    expect((await post).postData()).toMatch(/_csrf=[A-Za-z0-9_-]{43}/);
    expect(await page.textContent("#done")).toMatch(/^re-queued 1 files \(operation [0-9a-z]+-[0-9a-f]{10}\)$/);
    const db = harness.runtime.db;
    const marked = await db.query(`SELECT file_id FROM migration_files WHERE retry_requested_at IS NOT NULL`);
    expect(marked.rows.map((r) => Number(r.file_id))).toEqual([fileId]);
    const operation = /operation ([0-9a-z]+-[0-9a-f]{10})/.exec((await page.textContent("#done"))!)![1]!;
    const recorded = await db.query(`SELECT name, submitted_by FROM operations WHERE id = $1`, [operation]);
    expect(recorded.rows).toEqual([{ name: "retry-failed", submitted_by: "dashboard:alice" }]);

    // A whole category, from its summary row (permanent: only once "cause fixed" is ticked).
    await page.goto(`${base}/failures`);
    const row = page.locator("section").first().locator("tr", { hasText: "not-found" });
    await Promise.all([page.waitForURL(/done=/), row.getByRole("button", { name: /^Retry \d+ not-found$/ }).click()]);
    expect(await page.textContent("#done")).toBe("nothing re-queued (permanent: not-found 3; tick the box once the cause is fixed)");
    await row.locator('input[name="includePermanent"]').check();
    await Promise.all([page.waitForURL(/done=/), row.getByRole("button", { name: /^Retry \d+ not-found$/ }).click()]);
    expect(await page.textContent("#done")).toMatch(/^re-queued 3 files \(operation [0-9a-z]+-[0-9a-f]{10}\)$/);
    expect((await db.query(`SELECT count(*)::int AS n FROM migration_files WHERE retry_requested_at IS NOT NULL`)).rows[0].n).toBe(3);
    await page.screenshot({ path: join(ARTIFACTS, "operator-failures-retried.png"), fullPage: true });
  });

  it("viewer: sees the failures but no retry control; a retry posted anyway is refused", async () => {
    const page = await signIn("victor", PASSWORDS.victor, "/failures");
    expect(await page.textContent("#count")).toBe("3 files");
    expect(await page.getByRole("button", { name: /retry/i }).count()).toBe(0);
    const refused = await page.evaluate(async () => (await fetch("/failures/retry", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "category=not-found" })).status).catch(() => "blocked");
    // No script runs on the page (CSP), so the browser itself refuses; the server refuses too:
    expect(["blocked", 403]).toContain(refused);
    const server = await fetch(`${base}/failures/retry`, { method: "POST", headers: { authorization: `Basic ${Buffer.from(`victor:${PASSWORDS.victor}`).toString("base64")}`, "content-type": "application/x-www-form-urlencoded" }, body: "category=not-found" });
    expect(server.status).toBe(403);
  });

  it("pages through many failures, 50 at a time", async () => {
    const db = harness.runtime.db;
    await db.query(
      `INSERT INTO migration_files (file_id, range_id, old_uri, file_name, size, status, error_category, error_message, last_attempt_date)
       SELECT 100000 + g, NULL, 'file:///gone/x' || g, 'x' || g, 1, 'FAIL', 'io', 'disk error ' || g, now() - make_interval(secs => g) FROM generate_series(1, 60) g`,
    );
    const page = await signIn("victor", PASSWORDS.victor, "/failures?category=io");
    expect(await page.textContent("#count")).toBe("60 files · page 1 of 2");
    expect(await page.locator("#files tr").count()).toBe(51);
    await Promise.all([page.waitForURL(/page=2/), page.getByRole("link", { name: "next →" }).click()]);
    expect(await page.locator("#files tr").count()).toBe(11);
    // By file id, newest first (a stable order while retries rewrite last tries): page 2 ends with the oldest.
    expect(await page.textContent("#files")).toContain("file:///gone/x1disk");
  });
});
