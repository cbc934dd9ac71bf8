import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { Registry } from "prom-client";
import { createLogger } from "./logger";
import { closeServer, startOpsServer } from "./opsServer";

describe("ops server", () => {
  const lines: string[] = [];
  const log = createLogger({ name: "ops", LOG_LEVEL: "info", LOG_FORMAT: "json", destination: new Writable({ write: (c: Buffer, _e, done) => (lines.push(c.toString()), done()) }) });
  const token = "t".repeat(40);

  it("with METRICS_TOKEN, /metrics needs the bearer token while probes stay open", async () => {
    const server = await startOpsServer({ port: 0, host: "127.0.0.1", registry: new Registry(), readiness: [], log, metricsToken: token });
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      expect((await fetch(`${base}/metrics`)).status).toBe(401);
      expect((await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}x` } })).status).toBe(401);
      expect((await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      expect((await fetch(`${base}/readyz`)).status).toBe(200);
    } finally {
      await closeServer(server);
    }
  });

  it("warns when it listens beyond loopback with /metrics open", async () => {
    const server = await startOpsServer({ port: 0, host: "0.0.0.0", registry: new Registry(), readiness: [], log });
    await closeServer(server);
    expect(lines.join("")).toContain("ops server reachable from the network with /metrics open to anyone: set METRICS_TOKEN");
  });
});
