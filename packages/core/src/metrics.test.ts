import { createMetrics } from "./metrics";

describe("JobTally (per-job counts handed to prom-client when the registry is read)", () => {
  const sample = async (metrics: ReturnType<typeof createMetrics>, name: string) => {
    const metric = metrics.registry.getSingleMetric(name);
    return (await metric!.get()).values.map((v) => [v.labels, v.value]);
  };

  it("counts completions per queue and name, and each one once however often the registry is read", async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    metrics.jobTally.jobCompleted("work", "quick");
    metrics.jobTally.jobCompleted("work", "quick");
    metrics.jobTally.jobCompleted("admin", "solo");
    expect(await sample(metrics, "fleet_jobs_completed_total")).toEqual([
      [{ queue: "work", name: "quick" }, 2],
      [{ queue: "admin", name: "solo" }, 1],
    ]);
    // Read again: nothing counted twice; new completions add to the totals.
    expect(await metrics.registry.metrics()).toContain('fleet_jobs_completed_total{queue="work",name="quick"} 2');
    metrics.jobTally.jobCompleted("work", "quick");
    expect(await sample(metrics, "fleet_jobs_completed_total")).toEqual([
      [{ queue: "work", name: "quick" }, 3],
      [{ queue: "admin", name: "solo" }, 1],
    ]);
  });

  it("shows the jobs running now per queue, 0 once they have ended", async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    metrics.jobTally.jobStarted("work");
    metrics.jobTally.jobStarted("work");
    metrics.jobTally.jobStarted("admin");
    expect(await sample(metrics, "fleet_active_jobs")).toEqual([
      [{ queue: "work" }, 2],
      [{ queue: "admin" }, 1],
    ]);
    metrics.jobTally.jobEnded("work");
    metrics.jobTally.jobEnded("admin");
    expect(await sample(metrics, "fleet_active_jobs")).toEqual([
      [{ queue: "work" }, 1],
      [{ queue: "admin" }, 0],
    ]);
  });
});
