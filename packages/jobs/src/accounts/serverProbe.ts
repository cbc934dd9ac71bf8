import { classifyError, describe } from "@fleet/core/classifyError";
import type { FleetError } from "@fleet/core/errors";
import type { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import type { Queryable } from "@fleet/db/pool";
import { recordProbe } from "@fleet/db/sql/migrationServers";
import { writeLog } from "@fleet/db/sql/log";
import { runRemoteCommand } from "@fleet/remote/remoteCommand";
import type { FleetJobs } from "../jobRegistry";
import type { RemoteServers } from "../remote/remoteServers";
import { alertOperators } from "./operatorAlert";
import { ACCOUNT_PLACEHOLDERS } from "./workflowFile";
import type { Workflow, WorkflowServer } from "./workflowFile";

/**
 * Health of migration servers: a probe is an SSH connection with the host-key check plus the
 * role's declared check command (workflow `checks`; without one, `true`). Probes run every few
 * minutes (accounts-probe), before a night's run and group update (pre-flight), and from held
 * steps (at most one prober per server per ACCOUNTS_RECHECK). Their outcome is the server's
 * `health` in migration_server; planning, reassignment and the step gate skip a down server.
 */

/** Categories of a failure to reach or use the server at all: never the account's fault. */
const SERVER_FAULT_CATEGORIES = new Set(["auth-failed", "network", "timeout", "unavailable", "bad-config"]);

/**
 * The error as a server fault, or undefined when it is the step's own failure. A command that
 * ran and exited (or was killed) carries its result as a cause: that outcome belongs to the
 * account. Without one, nothing ran: the connection, authentication or host key failed.
 */
export function serverFault(err: unknown): FleetError | undefined {
  const error = classifyError(err);
  if (!SERVER_FAULT_CATEGORIES.has(error.category) || error.category === "interrupted") return undefined;
  let current: unknown = err;
  for (let i = 0; i < 6 && current; i++) {
    if ((current as { result?: unknown }).result !== undefined) return undefined;
    current = (current as { cause?: unknown }).cause;
  }
  return error;
}

export type ProbeOutcome = { ok: true; latencyMs: number } | { ok: false; error: string; category: string };

export async function probeServer(server: WorkflowServer, workflow: Workflow, remote: RemoteServers, timeoutMs: number, signal?: AbortSignal): Promise<ProbeOutcome> {
  const started = Date.now();
  try {
    const registered = remote.server(server.ssh);
    const values: Record<string, string> = Object.fromEntries(ACCOUNT_PLACEHOLDERS.map((p) => [p, ""]));
    values.server = server.name;
    await runRemoteCommand(registered.target, { template: workflow.checks[server.role] ?? "true", values }, {
      timeoutMs,
      env: { ...registered.env },
      errorPatterns: registered.errorPatterns,
      maxOutputBytes: 8 * 1024,
      label: `probe of ${server.name}`,
      ...(signal ? { signal } : {}),
    });
    return { ok: true, latencyMs: Date.now() - started };
  } catch (err) {
    const error = classifyError(err);
    return { ok: false, error: describe(err), category: error.category };
  }
}

export interface ProbeDeps {
  db: Queryable;
  remote: RemoteServers;
  jobs?: JobClient<FleetJobs>;
  operators: readonly string[];
  log: Logger;
  timeoutMs: number;
  job?: string;
}

/** Probes one server and records it; a change of health is logged, a server going down alerts. */
export async function probeAndRecord(deps: ProbeDeps, workflow: Workflow, server: WorkflowServer, signal?: AbortSignal): Promise<ProbeOutcome> {
  const outcome = await probeServer(server, workflow, deps.remote, deps.timeoutMs, signal);
  const change = await recordProbe(deps.db, server.name, outcome);
  if (change && change.before !== change.after) {
    if (!outcome.ok) {
      await alertOperators(
        { db: deps.db, ...(deps.jobs ? { jobs: deps.jobs } : {}), operators: deps.operators, log: deps.log, ...(deps.job ? { job: deps.job } : {}) },
        {
          level: "error",
          subject: `server:${server.name}`,
          summary: `migration server ${server.name} is down (${outcome.category}): its accounts are held`,
          details: { error: outcome.error },
          dedupeKey: `down:${server.name}:${new Date().toISOString().slice(0, 13)}`,
        },
      );
    } else if (change.before === "down") {
      await writeLog(deps.db, [{ level: "info", ...(deps.job ? { job: deps.job } : {}), subject: `server:${server.name}`, message: `server ${server.name} is ${change.after} again (probe ${outcome.latencyMs} ms)` }]);
      deps.log.info({ server: server.name, latencyMs: outcome.latencyMs, before: change.before }, "migration server healthy");
    }
  }
  return outcome;
}

/** Pre-flight: probes the named servers at once; returns those that are down, with why. */
export async function preflight(deps: ProbeDeps, workflow: Workflow, names: Iterable<string>, signal?: AbortSignal): Promise<Map<string, string>> {
  const servers = workflow.servers.filter((s) => new Set(names).has(s.name));
  const outcomes = await Promise.all(servers.map(async (s) => [s.name, await probeAndRecord(deps, workflow, s, signal)] as const));
  return new Map(outcomes.filter(([, o]) => !o.ok).map(([name, o]) => [name, (o as { error: string }).error]));
}
