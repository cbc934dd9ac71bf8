import { createHash, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { Registry } from "prom-client";
import { ConfigError } from "./errors";
import type { Logger } from "./logger";

/**
 * The small HTTP server every long-running app exposes: /healthz (the process is alive),
 * /readyz (its dependencies answer and it is doing its job) and /metrics (Prometheus).
 */
export interface Check {
  name: string;
  check(): Promise<void>;
}

export interface OpsServerOptions {
  port: number;
  host: string;
  /** The variables that set port and host, named when the port is taken (default: the worker's METRICS_PORT, METRICS_HOST). */
  variables?: { port: string; host: string };
  registry: Registry;
  readiness: readonly Check[];
  log: Logger;
  /**
   * When set, /metrics answers only `Authorization: Bearer <token>` (Prometheus'
   * `authorization.credentials_file`); /healthz and /readyz stay open for probes.
   */
  metricsToken?: string;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

export async function startOpsServer(options: OpsServerOptions): Promise<Server> {
  const server = createServer((req, res) => {
    const url = req.url?.split("?")[0];
    if (req.method !== "GET") {
      res.writeHead(405, { allow: "GET" }).end();
      return;
    }
    if (url === "/healthz") {
      res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
      return;
    }
    if (url === "/readyz") {
      void runChecks(options.readiness).then((result) => {
        // Open to probes without a token: a failing check is named, its error only logged
        // (found by a security review: the answer showed anyone who reached the port the
        // database's role, name or host:port, as the dashboard's /readyz once did).
        const failed = Object.entries(result.checks).filter(([, outcome]) => outcome !== "ok");
        if (failed.length > 0) options.log.warn({ failed: Object.fromEntries(failed) }, "not ready");
        res.writeHead(result.ok ? 200 : 503, { "content-type": "application/json", "cache-control": "no-store" }).end(JSON.stringify(publicReadiness(result)));
      });
      return;
    }
    if (url === "/metrics") {
      if (options.metricsToken !== undefined && !bearerMatches(req.headers.authorization, options.metricsToken)) {
        res.writeHead(401, { "content-type": "application/json", "cache-control": "no-store" }).end('{"error":"a bearer token is required (METRICS_TOKEN)"}');
        return;
      }
      options.registry.metrics().then(
        (body) => res.writeHead(200, { "content-type": options.registry.contentType }).end(body),
        (err: unknown) => {
          options.log.error({ err }, "metrics collection failed");
          res.writeHead(500).end();
        },
      );
      return;
    }
    res.writeHead(404, { "content-type": "application/json" }).end('{"error":"not found"}');
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => reject(err.code === "EADDRINUSE" ? portTaken(options, err) : err));
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address();
  options.log.info({ address, metricsToken: options.metricsToken !== undefined }, "ops server listening (/healthz, /readyz, /metrics)");
  if (!LOOPBACK.test(options.host) && options.metricsToken === undefined) {
    options.log.warn({ host: options.host }, "ops server reachable from the network with /metrics open to anyone: set METRICS_TOKEN");
  }
  return server;
}

/**
 * The port is another process's: a second worker started on the same host, as the README's
 * "scale these" invites (found by a new operator's walkthrough: the worker died with a bare
 * `listen EADDRINUSE` stack that named neither the variable nor the way out).
 */
function portTaken(options: OpsServerOptions, cause: Error): ConfigError {
  const { port, host } = options.variables ?? { port: "METRICS_PORT", host: "METRICS_HOST" };
  const err = new ConfigError([
    `${port}: ${options.host}:${options.port} is already in use (another Fleet process on this host?): give each process on a host its own ${port}, or ${port}=0 to pick a free one (the address is logged at start); ${host} sets the address`,
  ]);
  return Object.assign(err, { cause });
}

/** The request's bearer token equals `expected` (compared as digests, in constant time). */
function bearerMatches(header: string | undefined, expected: string): boolean {
  const given = header?.startsWith("Bearer ") ? header.slice(7).trim() : "";
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** A readiness result as an unauthenticated caller may see it: each check "ok" or "failed", never the error. */
export function publicReadiness(result: { ok: boolean; checks: Record<string, string> }): { ok: boolean; checks: Record<string, "ok" | "failed"> } {
  return { ok: result.ok, checks: Object.fromEntries(Object.entries(result.checks).map(([name, outcome]) => [name, outcome === "ok" ? "ok" : "failed"])) };
}

/** Runs every check at once (2 s each); `ok` only when all pass. Messages say what failed (for logs). */
export async function runChecks(checks: readonly Check[]): Promise<{ ok: boolean; checks: Record<string, string> }> {
  const results: Record<string, string> = {};
  let ok = true;
  await Promise.all(
    checks.map(async (c) => {
      try {
        await withTimeout(c.check(), 2_000);
        results[c.name] = "ok";
      } catch (err) {
        ok = false;
        results[c.name] = err instanceof Error ? err.message : String(err);
      }
    }),
  );
  return { ok, checks: results };
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
