import { createServer } from "node:http";
import type { IncomingHttpHeaders, Server } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A consent API on loopback (node:http): serves `pages` in cursor order, answering
 * `GET /consents?limit=N[&cursor=C]` with `{items, nextCursor}`. `failures` queues answers
 * to give before the real one for a cursor (429 with Retry-After, 5xx...). Requests are
 * recorded with their headers for assertions.
 */
export interface ConsentFixture {
  url: string;
  requests: Array<{ cursor: string | null; headers: IncomingHttpHeaders }>;
  /** Pages; page i is served for cursor `c<i>` (page 0 for no cursor). */
  pages: unknown[][];
  /** Status codes to answer before serving a cursor's page, consumed one per request. */
  failures: Map<string, number[]>;
  /** Cursor (`c<i>`) that fails with 500 forever. */
  brokenAt?: string;
  close(): Promise<void>;
}

export async function startConsentApi(pages: unknown[][]): Promise<ConsentFixture> {
  const fixture: Omit<ConsentFixture, "url" | "close"> = { requests: [], pages, failures: new Map() };
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const cursor = url.searchParams.get("cursor");
    fixture.requests.push({ cursor, headers: req.headers });
    const key = cursor ?? "c0";
    const queued = fixture.failures.get(key);
    const failure = queued?.shift() ?? (fixture.brokenAt === key ? 500 : undefined);
    if (failure !== undefined) {
      res.writeHead(failure, failure === 429 ? { "retry-after": "0" } : {});
      res.end("busy");
      return;
    }
    const index = Number(key.slice(1));
    const items = fixture.pages[index] ?? [];
    const nextCursor = index + 1 < fixture.pages.length ? `c${index + 1}` : null;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ items, nextCursor }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(fixture, {
    url: `http://127.0.0.1:${port}/consents`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }) as ConsentFixture;
}
