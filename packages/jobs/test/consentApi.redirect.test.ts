import { createServer } from "node:http";
import type { IncomingHttpHeaders, Server } from "node:http";
import { BlockList } from "node:net";
import type { AddressInfo } from "node:net";
import { fetchConsentPage } from "../src/accounts/consentApi";

/**
 * The consent API's token must only ever reach the consent API's origin (security review):
 * fetch follows redirects and strips only `Authorization` on a cross-origin hop, so a token in
 * another header (ACCOUNTS_CONSENT_AUTH_HEADER=X-Api-Key) went to wherever a redirect pointed.
 * Real HTTP servers on loopback: "127.0.0.1" and "localhost" are different origins.
 */

interface Site {
  server: Server;
  port: number;
  requests: Array<{ path: string; headers: IncomingHttpHeaders }>;
}

async function site(answer: (path: string, port: number) => { status: number; headers?: Record<string, string>; body?: string }): Promise<Site> {
  const requests: Site["requests"] = [];
  let port = 0;
  const server = createServer((req, res) => {
    requests.push({ path: req.url ?? "", headers: req.headers });
    const a = answer(req.url ?? "", port);
    res.writeHead(a.status, a.headers ?? {});
    res.end(a.body ?? "");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
  return { server, port, requests };
}

const PAGE = { status: 200, headers: { "content-type": "application/json" }, body: JSON.stringify({ items: [{ id: "a1" }], nextCursor: null }) };
const sites: Site[] = [];
afterEach(async () => {
  for (const s of sites.splice(0)) await new Promise<void>((resolve) => s.server.close(() => resolve()));
});

function settings(url: string) {
  return { url, pageSize: 10, authHeader: "X-Api-Key", token: "consent-s3cret-token", timeoutMs: 5_000, backoffMs: [10], maxPageBytes: 1024 * 1024, privateNetworks: new BlockList() };
}

describe("consent API redirects", () => {
  it("never sends the auth header to another origin a redirect points to", async () => {
    const elsewhere = await site(() => PAGE);
    const api = await site(() => ({ status: 302, headers: { location: `http://localhost:${elsewhere.port}/steal` } }));
    sites.push(elsewhere, api);
    await expect(fetchConsentPage(settings(`http://127.0.0.1:${api.port}/consents`), null, { signal: new AbortController().signal })).rejects.toMatchObject({
      category: "bad-config",
      message: expect.stringContaining(`redirected (302) to another origin, http://localhost:${elsewhere.port}`),
    });
    expect(api.requests.map((r) => r.headers["x-api-key"])).toEqual(["consent-s3cret-token"]);
    expect(elsewhere.requests).toEqual([]);
  });

  it("follows a redirect within the consent API's origin, with the header", async () => {
    const api = await site((path) => (path.startsWith("/v2/") ? PAGE : { status: 301, headers: { location: `/v2${path}` } }));
    sites.push(api);
    const page = await fetchConsentPage(settings(`http://127.0.0.1:${api.port}/consents`), "c1", { signal: new AbortController().signal });
    expect(page).toEqual({ items: [{ id: "a1" }], nextCursor: null });
    expect(api.requests.map((r) => [r.path, r.headers["x-api-key"]])).toEqual([
      ["/consents?limit=10&cursor=c1", "consent-s3cret-token"],
      ["/v2/consents?limit=10&cursor=c1", "consent-s3cret-token"],
    ]);
  });

  it("gives up on a redirect loop", async () => {
    const api = await site((path) => ({ status: 302, headers: { location: path } }));
    sites.push(api);
    await expect(fetchConsentPage(settings(`http://127.0.0.1:${api.port}/consents`), null, { signal: new AbortController().signal })).rejects.toMatchObject({ category: "bad-config", message: expect.stringContaining("redirected more than 5 times") });
  });
});
