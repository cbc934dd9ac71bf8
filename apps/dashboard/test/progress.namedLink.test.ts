import { createPool } from "@fleet/db/pool";
import { recordNamedLink } from "@fleet/jobs/migration/transferLabels";
import { bullPrefix } from "@fleet/core/redis";
import { createDashboardFixture, login, send, PASSWORDS } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

/**
 * The progress page names the link the workers run by its label, as `fleet migrate status`
 * does. Found by a walk: it showed `file:// → file://` (the locations) beside the CLI's
 * `local:/data → local:/archive`; the dashboard has no storage configuration, so the workers
 * record their link (recordNamedLink, at start) and the page reads it.
 */
let fx: DashboardFixture;
beforeAll(async () => {
  fx = await createDashboardFixture("dash-named-link");
  const db = createPool({ connectionString: fx.db.url, max: 1 });
  try {
    await db.query(`INSERT INTO source_files (uri, name, size, owner) SELECT 'f' || i, 'f' || i, 100, 't' FROM generate_series(1, 3) i`);
    await db.query(
      `INSERT INTO migration_files (file_id, range_id, old_uri, new_uri, file_name, size, sha256, status, retry_count, migration_date, last_attempt_date)
       SELECT i, 1, 'file:///data/f' || i, 'file:///archive/f' || i, 'f' || i, 100, repeat('0', 64), 'SUCCESS', 0, now(), now() FROM generate_series(1, 3) i`,
    );
  } finally {
    await db.end();
  }
}, 60_000);
afterAll(() => fx?.close());

it("links show under the label a worker recorded (a recorded link no outcome is under changes nothing)", async () => {
  // As a worker with SOURCE_URL=/data DESTINATION_URL=/archive records it (namedLink of its storages).
  await recordNamedLink(fx.dashboard.redis, bullPrefix(fx.prefix), { source: "local:/data", destination: "local:/archive", sourceRoot: "file:///data/", destinationRoot: "file:///archive/" });
  await recordNamedLink(fx.dashboard.redis, bullPrefix(fx.prefix), { source: "s3://elsewhere/x/", destination: "local:/archive", sourceRoot: "s3://elsewhere/x/", destinationRoot: "file:///archive/" });
  const { jar } = await login(fx.dashboard.url, "victor", PASSWORDS.victor);
  const res = await send(fx.dashboard.url, "/progress.json", { jar });
  expect(res.status).toBe(200);
  const r = (await res.json()) as { links: Array<{ source: string; destination: string; files: number }> };
  expect(r.links.map((l) => [l.source, l.destination, l.files])).toEqual([["local:/data", "local:/archive", 3]]);
});

it("a link recorded since under the same locations (a worker redeployed on other folders) names them, as the CLI of that configuration does", async () => {
  // Found by a review: the first link ever recorded for a pair of locations named it for good
  // (the hash keeps its fields in the order they were first set), so after a redeploy from
  // /data → /archive to /srv/in → /srv/out the page still said local:/data → local:/archive
  // where `fleet migrate status` said local:/srv/in → local:/srv/out.
  await new Promise((r) => setTimeout(r, 5));
  await recordNamedLink(fx.dashboard.redis, bullPrefix(fx.prefix), { source: "local:/srv/in", destination: "local:/srv/out", sourceRoot: "file:///srv/in/", destinationRoot: "file:///srv/out/" });
  await fx.dashboard.redis.incr(`${bullPrefix(fx.prefix)}:dashboard:progress-version`);
  const { jar } = await login(fx.dashboard.url, "victor", PASSWORDS.victor);
  const r = (await (await send(fx.dashboard.url, "/progress.json", { jar })).json()) as { links: Array<{ source: string; destination: string; files: number }> };
  expect(r.links.map((l) => [l.source, l.destination, l.files])).toEqual([["local:/srv/in", "local:/srv/out", 3]]);
  // A worker of the first configuration started again names them again.
  await recordNamedLink(fx.dashboard.redis, bullPrefix(fx.prefix), { source: "local:/data", destination: "local:/archive", sourceRoot: "file:///data/", destinationRoot: "file:///archive/" });
  await fx.dashboard.redis.incr(`${bullPrefix(fx.prefix)}:dashboard:progress-version`);
  const again = (await (await send(fx.dashboard.url, "/progress.json", { jar })).json()) as { links: Array<{ source: string; destination: string; files: number }> };
  expect(again.links.map((l) => [l.source, l.destination, l.files])).toEqual([["local:/data", "local:/archive", 3]]);
});
