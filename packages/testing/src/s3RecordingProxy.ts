import http from "node:http";
import type { AddressInfo } from "node:net";

/** What reached the server: method, path, whether the AWS SDK sent it, and the status answered. */
export interface Seen {
  method: string;
  path: string;
  sdk: boolean;
  status?: number;
}

/** Sends a request on to the server and its answer back; settles when the answer is sent. */
export type Forward = (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen) => Promise<void>;

/**
 * A forwarding proxy in front of s3rver that records every request; `intercept` may answer a
 * request itself (return true) instead of forwarding it, or forward it later (`forward`).
 */
export async function startRecorder(
  target: string,
  intercept?: (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen, forward: Forward) => boolean,
): Promise<{ endpoint: string; seen: Seen[]; close(): Promise<void> }> {
  const upstream = new URL(target);
  const seen: Seen[] = [];
  const forward: Forward = (req, res, entry) =>
    new Promise((resolve) => {
      const onward = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        entry.status = answer.statusCode;
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
        answer.once("end", () => resolve());
        answer.once("error", () => resolve());
      });
      onward.on("error", () => {
        res.destroy();
        resolve();
      });
      req.pipe(onward);
    });
  const server = http.createServer((req, res) => {
    const entry: Seen = { method: req.method ?? "", path: req.url ?? "", sdk: req.headers["amz-sdk-invocation-id"] !== undefined };
    seen.push(entry);
    if (intercept?.(req, res, entry, forward)) return;
    void forward(req, res, entry);
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

/**
 * An intercept that gives s3rver (which ignores the header) AWS S3's conditional writes: a PUT
 * of an object, or the completion of a multipart upload (POST `?uploadId=`), with
 * `If-None-Match: *` is answered 412 PreconditionFailed, with nothing written, when the key
 * exists — checked with `exists` (the test's own client) and forwarded otherwise, one such
 * request per key at a time, so the check and the write are atomic as on AWS. Path-style
 * addressing (`/bucket/key`); uploads of parts are forwarded.
 */
export function honourIfNoneMatch(exists: (bucket: string, key: string) => Promise<boolean>) {
  const turns = new Map<string, Promise<void>>();
  return (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen, forward: Forward): boolean => {
    if (req.headers["if-none-match"] !== "*") return false;
    const url = new URL(req.url ?? "/", "http://proxy");
    // A PUT of a whole object, or the completion of a multipart upload (POST ?uploadId=).
    const completion = url.searchParams.has("uploadId");
    if (req.method !== (completion ? "POST" : "PUT")) return false;
    const [bucket = "", ...rest] = url.pathname.slice(1).split("/");
    const key = rest.map(decodeURIComponent).join("/");
    req.pause();
    const turn = (turns.get(url.pathname) ?? Promise.resolve()).then(async () => {
      if (!(await exists(decodeURIComponent(bucket), key))) return forward(req, res, seen);
      seen.status = 412;
      req.resume(); // the body is not wanted; read it so the connection can be reused
      res.writeHead(412, { "content-type": "application/xml" });
      res.end(
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>If-None-Match</Condition></Error>',
      );
    });
    const settled = turn.catch(() => {
      res.destroy();
    });
    turns.set(url.pathname, settled);
    void settled.then(() => {
      if (turns.get(url.pathname) === settled) turns.delete(url.pathname);
    });
    return true;
  };
}
