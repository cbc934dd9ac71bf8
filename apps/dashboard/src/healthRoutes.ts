import type { FastifyInstance } from "fastify";
import type { Check } from "@fleet/core/opsServer";
import { runChecks } from "@fleet/core/opsServer";

/** /healthz (alive) and /readyz (Redis and Postgres answer), open to probes without credentials. */
export function healthRoutes(app: FastifyInstance, readiness: readonly Check[]): void {
  app.get("/healthz", async (_req, reply) => reply.header("cache-control", "no-store").send({ status: "ok" }));
  app.get("/readyz", async (_req, reply) => {
    const result = await runChecks(readiness);
    return reply.code(result.ok ? 200 : 503).header("cache-control", "no-store").send(result);
  });
}
