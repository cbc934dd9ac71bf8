import type { FastifyInstance } from "fastify";
import type { Check } from "@fleet/core/opsServer";
import { publicReadiness, runChecks } from "@fleet/core/opsServer";

/** /healthz (alive) and /readyz (Redis and Postgres answer), open to probes without credentials. */
export function healthRoutes(app: FastifyInstance, readiness: readonly Check[]): void {
  app.get("/healthz", async (_req, reply) => reply.header("cache-control", "no-store").send({ status: "ok" }));
  // Open without a login (probes), so a failing dependency is named but its error is not: that
  // would show anyone the database's role, name or host:port (found by a security review). The
  // error goes to the log.
  app.get("/readyz", async (req, reply) => {
    const result = await runChecks(readiness);
    const failed = Object.entries(result.checks).filter(([, outcome]) => outcome !== "ok");
    if (failed.length > 0) req.log.warn({ failed: Object.fromEntries(failed) }, "not ready");
    return reply.code(result.ok ? 200 : 503).header("cache-control", "no-store").send(publicReadiness(result));
  });
}
