import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createPipelineHarness, fileSummary, waitFor } from "../../../packages/jobs/test/pipelineHarness";
import type { PipelineHarness } from "../../../packages/jobs/test/pipelineHarness";
import { fleet, fleetJson } from "../../cli/test/runFleet";
import { basic, createDashboardFixture, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";
import { sample } from "./promText";

/**
 * One run, three views: `fleet migrate status`, /progress(.json) and /metrics show the same rate,
 * bytes/s and elapsed time for the same run (they used to say 1,409 and 155.4 files/s), and all
 * say "paused" — with no ETA — after `fleet pause migration`.
 */
describe("the same numbers in the CLI, the dashboard and the metrics", () => {
  let h: PipelineHarness;
  let fx: DashboardFixture;
  let cliEnv: Record<string, string>;
  const viewer = { authorization: basic("victor", "victor-viewer-pw") };

  beforeAll(async () => {
    h = await createPipelineHarness("numbers", { BATCH_SIZE: "10" });
    await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 40, size: (i) => 2_000 + i });
    const runner = await h.startRunner();
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await waitFor(async () => (await fileSummary(h.runtime)).withoutOutcome === 0, 30_000, "the migration to finish");
    await waitFor(async () => (await h.runtime.db.query(`SELECT 1 FROM migration_ranges WHERE status <> 'COMPLETE'`)).rowCount === 0 || undefined, 10_000, "ranges complete");
    await runner.stop(1_000);
    fx = await createDashboardFixture("numbers", { DATABASE_URL: h.config.DATABASE_URL, FLEET_PREFIX: h.config.FLEET_PREFIX });
    cliEnv = { ...h.env, LOG_LEVEL: "warn" };
  }, 90_000);
  afterAll(async () => {
    await fx?.close();
    await h?.close();
  });

  async function views() {
    const [cli, page, metrics] = await Promise.all([
      fleetJson(cliEnv, ["migrate", "status"]),
      send(fx.dashboard.url, "/progress.json", { headers: viewer }).then((r) => r.json() as Promise<any>),
      send(fx.dashboard.url, "/metrics", { headers: { authorization: `Bearer ${fx.apiToken}` } }).then((r) => r.text()),
    ]);
    return { cli: cli.numbers, page: page.numbers, metrics };
  }

  it("a finished run: the same rate (files/s, bytes/s), elapsed and counts everywhere", async () => {
    const { cli, page, metrics } = await views();
    expect(cli.state).toBe("done");
    expect(cli.rate.run.filesPerSec).toBeGreaterThan(0);
    // Once done, a run's numbers no longer move: the views agree exactly.
    expect(page.rate.run).toEqual(cli.rate.run);
    expect(page.elapsedSeconds).toBe(cli.elapsedSeconds);
    expect([page.done, page.total, page.succeeded, page.failed]).toEqual([cli.done, cli.total, cli.succeeded, cli.failed]);
    expect(sample(metrics, "fleet_migration_files_per_second", { window: "run" })).toBeCloseTo(cli.rate.run.filesPerSec, 9);
    expect(sample(metrics, "fleet_migration_bytes_per_second", { window: "run" })).toBeCloseTo(cli.rate.run.bytesPerSec, 6);
    expect(sample(metrics, "fleet_migration_elapsed_seconds")).toBeCloseTo(cli.elapsedSeconds, 9);
    expect(sample(metrics, "fleet_migration_eta_seconds")).toBe(0);
    // And the words on the page and in the terminal are the same digits.
    const text = await fleet(cliEnv, ["migrate", "status"]);
    const cliAvg = /avg ([\d.,]+) files\/s/.exec(text.out)![1];
    const html = await (await send(fx.dashboard.url, "/progress", { headers: viewer })).text();
    expect(/id="rate-run">([\d.,]+) files\/s/.exec(html)![1]).toBe(cliAvg);
  });

  it("after `fleet pause migration`, every view says paused and shows no ETA; resume clears it", async () => {
    // Work left to do, so that the migration is held rather than done.
    await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 10, key: (i) => `more/${i}.bin` });
    expect((await fleet(cliEnv, ["pause", "migration"])).code).toBe(0);

    const text = await fleet(cliEnv, ["migrate", "status"]);
    expect(text.out).toMatch(/^state {10}blocked \(paused\): no ETA while held$/m);
    expect(text.out).toMatch(/^held {11}paused: queue migration is paused: no new range starts until `fleet resume migration`$/m);
    expect(text.out).toMatch(/eta - \(paused: /);
    await waitFor(async () => {
      const { cli, page, metrics } = await views();
      return (
        cli.state === "blocked" &&
        page.state === "blocked" &&
        sample(metrics, "fleet_migration_blocked", { kind: "paused" }) === 1 && { cli, page, metrics }
      );
    }, 15_000, "every view to say paused").then(({ cli, page, metrics }) => {
      expect(cli.blockers).toEqual([{ kind: "paused", reason: "queue migration is paused: no new range starts until `fleet resume migration`" }]);
      expect(page.blockers).toEqual(cli.blockers);
      expect([cli.etaSeconds, page.etaSeconds]).toEqual([null, null]);
      expect(sample(metrics, "fleet_migration_eta_seconds")).toBeNaN();
      expect(sample(metrics, "fleet_migration_blocked", { kind: "window-closed" })).toBe(0);
    });
    const html = await (await send(fx.dashboard.url, "/progress", { headers: viewer })).text();
    expect(html).toContain('data-blocker="paused"><strong>Paused</strong>: queue migration is paused');
    expect(html).toMatch(/id="eta">– \(held\)/);

    expect((await fleet(cliEnv, ["resume", "migration"])).code).toBe(0);
    await waitFor(async () => {
      const { cli, metrics } = await views();
      return cli.state !== "blocked" && sample(metrics, "fleet_migration_blocked", { kind: "paused" }) === 0;
    }, 15_000, "the pause to be gone everywhere");
  });
});
