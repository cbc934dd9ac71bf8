import { queueConcurrencyField } from "@fleet/jobs/settings";
import { runCli } from "./fleetApps";
import { createWorkerFixture } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * "an invalid value is refused, exit 2". WORKER_CONCURRENCY names queues; a value that
 * names no queue the fleet has (a typo) or leaves queues out silently sets every queue it does
 * not name to 1 job at once (startWorker/JobRunner.setConcurrency: `perQueue[name] ?? 1`).
 */
describe("WORKER_CONCURRENCY set live is checked against the fleet's queues", () => {
  let fx: WorkerFixture;
  beforeAll(async () => {
    fx = await createWorkerFixture("settings-validation");
  });
  afterAll(() => fx?.close());

  it("a typo in the queue name is refused instead of dropping every queue to 1 job at once", async () => {
    const outcome = await runCli(fx.env, ["settings", "set", "WORKER_CONCURRENCY", "migraton=8", "--by", "test"]).then(
      (r) => ({ code: 0, out: r.stdout }),
      (err: { code?: number; stderr?: string }) => ({ code: err.code ?? -1, out: err.stderr ?? "" }),
    );
    const stored = await fx.runtime.db.query<{ value: string }>(`SELECT value FROM settings WHERE name = 'WORKER_CONCURRENCY'`);
    process.stdout.write(`WORKER_CONCURRENCY=migraton=8: exit ${outcome.code}; stored ${JSON.stringify(stored.rows)}\n`);
    expect(outcome.code).toBe(2);
    expect(stored.rows).toEqual([]);
  }, 60_000);

  it("a --link label that is not the configuration's link is refused (it would change nothing), unless --any-link", async () => {
    const attempt = (args: string[]) =>
      runCli(fx.env, ["settings", "set", "LINK_PAUSED", "true", ...args, "--by", "test"]).then(
        () => ({ code: 0, err: "" }),
        (err: { code?: number; stderr?: string }) => ({ code: err.code ?? -1, err: err.stderr ?? "" }),
      );
    const typo = await attempt(["--link", "file:// → file://"]);
    expect(typo.code).toBe(2);
    expect(typo.err).toContain(`its link is "${fx.runtime.deps.link.link}"`);
    expect((await fx.runtime.db.query(`SELECT 1 FROM settings WHERE name = 'LINK_PAUSED'`)).rows).toEqual([]);
    expect((await attempt(["--link", "s3://other → s3://elsewhere", "--any-link"])).code).toBe(0);
    expect((await fx.runtime.db.query<{ scope: string }>(`SELECT scope FROM settings WHERE name = 'LINK_PAUSED'`)).rows).toEqual([{ scope: "s3://other → s3://elsewhere" }]);
  }, 60_000);

  it("queues a value leaves out keep their default (not 1)", () => {
    expect(queueConcurrencyField.parse("migration=4")).toEqual({ migration: 4, maintenance: 3, remote: 2 });
    expect(queueConcurrencyField.safeParse("migraton=8").success).toBe(false);
  });
});
