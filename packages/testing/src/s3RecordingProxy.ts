import http from "node:http";
import type { AddressInfo } from "node:net";

/** What reached the server: method, path, whether the AWS SDK sent it, and the status answered. */
export interface Seen {
  method: string;
  path: string;
  sdk: boolean;
  status?: number;
}

/**
 * A forwarding proxy in front of s3rver that records every request; `intercept` may answer a
 * request itself (return true) instead of forwarding it.
 */
export async function startRecorder(
  target: string,
  intercept?: (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen) => boolean,
): Promise<{ endpoint: string; seen: Seen[]; close(): Promise<void> }> {
  const upstream = new URL(target);
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const entry: Seen = { method: req.method ?? "", path: req.url ?? "", sdk: req.headers["amz-sdk-invocation-id"] !== undefined };
    seen.push(entry);
    if (intercept?.(req, res, entry)) return;
    const forward = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      entry.status = answer.statusCode;
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    forward.on("error", () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
