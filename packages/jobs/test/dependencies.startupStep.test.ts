import { Writable } from "node:stream";
import { createLogger } from "@fleet/core/logger";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { startPrivatePostgres } from "@fleet/testing/privatePostgres";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { untilDependencies } from "../src/runtime/dependencies";
import type { DependencyCheck } from "../src/runtime/dependencies";

/**
 * A start-up step that reads PostgreSQL right after the wait for dependencies, while a
 * crash-restart takes PostgreSQL away again (a private cluster, stopped for real). The worker
 * exited 1 there (found by the chaos test: "worker failed to start", database unavailable, from
 * its first read of the live settings); the step now waits for the database and runs again.
 */
describe("untilDependencies: a start-up step whose dependency goes away", () => {
  let pg: PrivatePostgres;
  let db: DbPool;
  const lines: Array<{ msg: string; step?: string }> = [];
  const log = createLogger({ name: "test", LOG_LEVEL: "warn", LOG_FORMAT: "json", destination: new Writable({ write: (c, _e, cb) => (lines.push(JSON.parse(String(c)) as { msg: string }), cb()) }) });
  let checks: DependencyCheck[];

  beforeAll(async () => {
    pg = await startPrivatePostgres();
    db = createPool({ connectionString: pg.baseUrl, max: 2, applicationName: "fleet-test" });
    checks = [{ name: "postgres", check: async () => void (await db.query("SELECT 1")) }];
  }, 60_000);
  afterAll(async () => {
    await db?.end();
    await pg?.destroy();
  });

  it("waits for the database and runs the step again, instead of failing the start", async () => {
    await pg.stopServer("immediate");
    const back = new Promise((resolve) => setTimeout(resolve, 1_500)).then(() => pg.startServer());
    let tries = 0;
    const answer = await untilDependencies("live settings", async () => {
      tries++;
      return (await db.query<{ n: number }>("SELECT 42 AS n")).rows[0]!.n;
    }, checks, { log, pollMs: 200 });
    await back;
    expect(answer).toBe(42);
    expect(tries).toBeGreaterThanOrEqual(2);
    expect(lines).toContainEqual(expect.objectContaining({ msg: "a dependency went away during start-up: waiting for it, then trying again", step: "live settings" }));
  }, 60_000);

  it("throws a step's own failure at once when every dependency answers", async () => {
    let tries = 0;
    await expect(
      untilDependencies("bad step", async () => {
        tries++;
        await db.query("SELECT no_such_column FROM pg_class");
      }, checks, { log, pollMs: 200 }),
    ).rejects.toThrow(/no_such_column/);
    expect(tries).toBe(1);
  });
});
