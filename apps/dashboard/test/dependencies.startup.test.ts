import { createDashboardFixture } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

/**
 * A dashboard started with Redis and PostgreSQL up says nothing about waiting for them. Found by
 * a walk: every start logged "waiting for dependencies" with redis "Stream isn't writeable and
 * enableOfflineQueue options is false" — the first look came as the connection opened.
 */
let fx: DashboardFixture;
afterAll(() => fx?.close());

it("a start with healthy dependencies logs no wait for them", async () => {
  fx = await createDashboardFixture("dash-startup");
  // Past the second look (one poll, 1 s): a dependency really missing would be said by then.
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  expect((await fetch(`${fx.dashboard.url}/readyz`)).status).toBe(200);
  const waits = fx.logText().split("\n").filter((l) => l.includes("waiting for dependencies"));
  expect(waits).toEqual([]);
});
