import { createServer } from "node:http";
import { connect as netConnect } from "node:net";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { Registry } from "prom-client";
import { ConfigError } from "./errors";
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

  it("/readyz names a failing check but never its error, which goes to the log (security review)", async () => {
    // A real failure: a TCP connect to a port nothing listens on (as a database or Redis out of reach).
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const deadPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const connect = () =>
      new Promise<void>((resolve, reject) => {
        const socket = netConnect(deadPort, "127.0.0.1", () => (socket.destroy(), resolve()));
        socket.once("error", reject);
      });
    const readiness = [
      { name: "postgres", check: connect },
      { name: "redis", check: async () => {} },
      { name: "consuming", check: async () => Promise.reject(new Error('role "fleet_internal_admin" does not exist')) },
    ];
    const server = await startOpsServer({ port: 0, host: "127.0.0.1", registry: new Registry(), readiness, log, metricsToken: token });
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const res = await fetch(`${base}/readyz`);
      const text = await res.text();
      expect(res.status).toBe(503);
      expect(JSON.parse(text)).toEqual({ ok: false, checks: { postgres: "failed", redis: "ok", consuming: "failed" } });
      expect(text).not.toMatch(/ECONNREFUSED|fleet_internal_admin|127\.0\.0\.1/);
      expect(res.headers.get("cache-control")).toBe("no-store");
    } finally {
      await closeServer(server);
    }
    const logged = lines.join("");
    expect(logged).toContain(`ECONNREFUSED 127.0.0.1:${deadPort}`);
    expect(logged).toContain("fleet_internal_admin");
  });

  it("warns when it listens beyond loopback with /metrics open", async () => {
    const server = await startOpsServer({ port: 0, host: "0.0.0.0", registry: new Registry(), readiness: [], log });
    await closeServer(server);
    expect(lines.join("")).toContain("ops server reachable from the network with /metrics open to anyone: set METRICS_TOKEN");
  });

  it("a port another process holds (a second worker on the host) is a configuration error naming the variable and the way out, not a bare EADDRINUSE", async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const port = (holder.address() as AddressInfo).port;
    try {
      const started = startOpsServer({ port, host: "127.0.0.1", variables: { port: "SCHEDULER_METRICS_PORT", host: "SCHEDULER_METRICS_HOST" }, registry: new Registry(), readiness: [], log });
      const err = await started.then(
        (server) => closeServer(server).then(() => undefined),
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues).toEqual([
        `SCHEDULER_METRICS_PORT: 127.0.0.1:${port} is already in use (another Fleet process on this host?): give each process on a host its own SCHEDULER_METRICS_PORT, or SCHEDULER_METRICS_PORT=0 to pick a free one (the address is logged at start); SCHEDULER_METRICS_HOST sets the address`,
      ]);
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
  });
});
