import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { lookup as dnsLookup } from "node:dns/promises";
import { hostname } from "node:os";
import { z } from "zod";
import { parseConfig } from "@fleet/core/config";
import { accountFields, toAccountSettings } from "../src/accounts/accountSettings";
import { internalAddressKind } from "../src/webhooks/webhookAddress";
import { createPipelineHarness, finishedJob } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * Whoever holds the consent API's DNS record (often another organisation) must not be able to
 * point the worker at an internal service: the sync, which any `submit` token may start
 * (`accounts-sync`), would ask it with the consent token and quote the start of its answer into
 * the operation's error, which `read` tokens see (found by probing). The "internal service" is
 * a real HTTP server on loopback reached through this machine's own host name, which the system
 * resolver answers with an internal address (/etc/hosts: 127.0.0.1 or 127.0.1.1, or the pod's
 * private address): the resolver is the real one, nothing injected.
 */

let internal: Server;
let port: number;
const received: Array<{ url: string; token: string | undefined }> = [];
let h: PipelineHarness | undefined;

beforeAll(async () => {
  internal = createServer((req, res) => {
    received.push({ url: req.url ?? "", token: req.headers["x-api-key"] as string | undefined });
    if ((req.url ?? "").startsWith("/consents")) {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ items: [], nextCursor: null }));
      return;
    }
    res.writeHead(200, { "content-type": "text/plain" }).end("INTERNAL-ONLY iam/security-credentials secret");
  });
  // All interfaces: the host name may resolve to the pod's private address rather than loopback.
  await new Promise<void>((resolve) => internal.listen(0, resolve));
  port = (internal.address() as AddressInfo).port;
});
afterEach(async () => {
  await h?.close();
  h = undefined;
  received.length = 0;
});
afterAll(async () => {
  await new Promise((r) => internal?.close(r));
});

async function syncWith(env: Record<string, string>) {
  h = await createPipelineHarness("consent-address", { ACCOUNTS_CONSENT_AUTH_HEADER: "X-Api-Key", ACCOUNTS_CONSENT_TOKEN: "consent-s3cret-token", ACCOUNTS_CONSENT_BACKOFF: "10ms", ...env });
  await h.startRunner({ queues: ["maintenance"] });
  const job = await h.runtime.deps.jobs.enqueue("accounts-sync", { runDate: "2026-11-30" }, { jobId: `consent-address-${Math.random().toString(36).slice(2)}` });
  const { state, job: done } = await finishedJob(h.runtime, "maintenance", job.id!, 30_000);
  const { rows } = await h.runtime.db.query<{ error: string | null }>(`SELECT error FROM operations WHERE id = $1`, [job.id]);
  return { state, failedReason: done.failedReason ?? "", historyError: JSON.stringify(rows[0]?.error ?? null) };
}

describe("the consent API's address (security probe)", () => {
  it("a host name that resolves to an internal address is refused before any request: no token sent, nothing of the answer recorded", async () => {
    const host = hostname();
    const answers = await dnsLookup(host, { all: true });
    // The premise: this machine's name resolves only to internal addresses (loopback or private).
    expect(answers.length).toBeGreaterThan(0);
    expect(answers.filter((a) => internalAddressKind(a.address) === undefined)).toEqual([]);

    const { state, failedReason, historyError } = await syncWith({ ACCOUNTS_CONSENT_URL: `http://${host}:${port}/latest/meta-data` });
    expect(received).toEqual([]);
    expect(state).toBe("failed");
    const escaped = host.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    expect(failedReason).toMatch(new RegExp(`^bad-config: consent API refused: ${escaped} resolves to \\S+, a .* address: .*ACCOUNTS_CONSENT_PRIVATE_NETWORKS`));
    expect(historyError).toContain("consent API refused");
    expect(historyError).not.toContain("INTERNAL-ONLY");
  }, 60_000);

  it("ACCOUNTS_CONSENT_PRIVATE_NETWORKS lets an in-cluster consent API through by name; an IP literal is taken as written", async () => {
    const host = hostname();
    const ranges = (await dnsLookup(host, { all: true })).map((a) => (a.family === 6 ? `${a.address}/128` : `${a.address}/32`)).join(",");
    const byName = await syncWith({ ACCOUNTS_CONSENT_URL: `http://${host}:${port}/consents`, ACCOUNTS_CONSENT_PRIVATE_NETWORKS: ranges });
    expect(byName.state).toBe("completed");
    expect(received).toEqual([{ url: "/consents?limit=200", token: "consent-s3cret-token" }]);
    await h!.close();
    h = undefined;
    received.length = 0;

    const literal = await syncWith({ ACCOUNTS_CONSENT_URL: `http://127.0.0.1:${port}/consents` });
    expect(literal.state).toBe("completed");
    expect(received).toEqual([{ url: "/consents?limit=200", token: "consent-s3cret-token" }]);
  }, 60_000);
});

describe("ACCOUNTS_CONSENT_URL and ACCOUNTS_CONSENT_PRIVATE_NETWORKS at startup", () => {
  const parse = (env: Record<string, string>) => toAccountSettings(parseConfig(z.object(accountFields), env), "UTC");

  it("refuses a URL that is not http(s) or carries credentials, and a range that is not one", () => {
    expect(() => parse({ ACCOUNTS_CONSENT_URL: "file:///etc/passwd" })).toThrow(/ACCOUNTS_CONSENT_URL.*an http\(s\) URL/);
    expect(() => parse({ ACCOUNTS_CONSENT_URL: "https://user:pw@consent.example/api" })).toThrow(/ACCOUNTS_CONSENT_URL.*no credentials in the URL/);
    expect(() => parse({ ACCOUNTS_CONSENT_PRIVATE_NETWORKS: "10.20.0.0/33" })).toThrow(/ACCOUNTS_CONSENT_PRIVATE_NETWORKS: "10\.20\.0\.0\/33" is not an IP address or CIDR range/);
    const ok = parse({ ACCOUNTS_CONSENT_URL: "https://consent.example/api?page=1", ACCOUNTS_CONSENT_PRIVATE_NETWORKS: "10.20.0.0/16" });
    expect(ok.consent.privateNetworks.check("10.20.3.4", "ipv4")).toBe(true);
    expect(ok.consent.privateNetworks.check("10.21.3.4", "ipv4")).toBe(false);
  });
});
