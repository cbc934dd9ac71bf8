import type { FastifyInstance } from "fastify";
import type { Registry } from "prom-client";

/** GET /metrics for Prometheus (behind auth: a bearer token, basic auth or a session). */
export function metricsRoute(app: FastifyInstance, registry: Registry): void {
  app.get("/metrics", async (req, reply) => {
    try {
      const body = await registry.metrics();
      return reply.header("content-type", registry.contentType).header("cache-control", "no-store").send(body);
    } catch (err) {
      req.log.error({ err }, "metrics collection failed");
      return reply.code(503).send({ error: "metrics unavailable: Redis or PostgreSQL did not answer" });
    }
  });
}
