import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { QUEUES } from "../jobRegistry";
import { registerServers } from "./planBatch";
import { defineFleetJob } from "../defineFleetJob";
import { probeAndRecord } from "./serverProbe";

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Probe the migration servers: health, latency, last error (migration_server)",
  schema: z.object({}).strict().default({}),
  dedupeId: () => "accounts-probe",
  schedules: [{ id: "accounts-probe", cron: "*/5 * * * *", description: "every 5 min: probe the migration servers (SSH, host key, role check): health, latency, last error" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "accounts-probe": typeof contract;
  }
}

/**
 * Every few minutes: probes each migration server of the workflow (SSH connect with the host
 * key check, then its role's check command) and records health, latency and last error in
 * migration_server. A server coming back closes its breaker: its held steps go on at their
 * next re-check; one going down alerts the operators once.
 */
export const accountsProbe = defineFleetJob("accounts-probe", contract, {
  async handle(_payload, ctx): Promise<{ probed: number; down: string[] } | { skipped: string }> {
    const { db, accounts, remote, jobs } = ctx.deps;
    const workflow = accounts.workflow;
    if (!workflow) return { skipped: "ACCOUNTS_WORKFLOW_FILE is not set" };
    await registerServers(db, workflow, remote);
    const deps = { db, remote, jobs, operators: accounts.settings.operators, log: ctx.log, timeoutMs: accounts.settings.probeTimeoutMs, job: `accounts-probe:${ctx.job.id}` };
    const results: Array<{ name: string; ok: boolean }> = await Promise.all(workflow.servers.map(async (s) => ({ name: s.name, ok: (await probeAndRecord(deps, workflow, s, ctx.signal)).ok })));
    const down = results.filter((r) => !r.ok).map((r) => r.name);
    ctx.log.info({ servers: results.length, down }, "migration servers probed");
    return { probed: results.length, down };
  },
});
