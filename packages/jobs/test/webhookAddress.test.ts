import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { lookup as dnsLookup } from "node:dns/promises";
import { hostname } from "node:os";
import { Redis } from "ioredis";
import { z } from "zod";
import { LinkBreakers } from "@fleet/core/linkBreakers";
import { createLogger } from "@fleet/core/logger";
import { bullPrefix } from "@fleet/core/redis";
import { raiseAlert } from "@fleet/db/sql/alerts";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { AlertWatch } from "../src/alerts/alertWatch";
import { alertFields, toAlertSettings } from "../src/alerts/alertSettings";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { queueCompletionWebhooks } from "@fleet/db/sql/webhooks";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { sendWebhooks } from "../src/webhooks/sendWebhooks";
import { internalAddressKind, webhookAddress } from "../src/webhooks/webhookAddress";
import type { HostLookup } from "../src/webhooks/webhookAddress";
import { toWebhookSettings } from "../src/webhooks/webhookSettings";

const silent = createLogger({ name: "test", LOG_LEVEL: "silent", LOG_FORMAT: "json" });
const SECRET = "probe-webhook-secret-0123456789abcdef";

/**
 * An allowed host name whose DNS answer is an internal address (a changed record, or DNS
 * rebinding) must not make the worker POST to, and record the answer of, an internal service.
 * The resolver is injected: `.invalid` names never resolve for real, so a delivery that
 * arrives at the loopback receiver proves the connection went to the address the check saw.
 */
describe("webhooks to a host name that resolves to an internal address (security review)", () => {
  let database: TestDatabase;
  let db: DbPool;
  let server: Server;
  let port: number;
  const received: string[] = [];
  let operation = 0;

  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
    server = createServer((req, res) => {
      received.push(`${req.headers.host} ${req.url}`);
      req.resume();
      req.on("end", () => res.writeHead(200, { "content-type": "text/plain" }).end("internal service answer"));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((r) => server?.close(r));
    await db?.end();
    await database?.drop();
  });

  /** One delivery to `url`, sent once with `lookup`: the delivery's row and history afterwards. */
  async function sendOnce(url: string, allowed: string, lookup: HostLookup | undefined, privateNetworks: string[] = []) {
    const settings = toWebhookSettings({ WEBHOOK_ALLOWED_URLS: [allowed], WEBHOOK_SECRET: SECRET, WEBHOOK_BACKOFF: [60_000], WEBHOOK_PRIVATE_NETWORKS: privateNetworks }, []);
    const id = `probe-op-${++operation}`;
    await queueCompletionWebhooks(db, { id, createdAt: Date.now() }, [url], { event: "operation.finished", operation: { id } });
    const round = await sendWebhooks({ db, settings, log: silent, signal: new AbortController().signal, lookup });
    const { rows } = await db.query<{ status: string; last_error: string | null; last_status: number | null }>(`SELECT status::text AS status, last_error, last_status FROM webhook_deliveries WHERE operation_id = $1`, [id]);
    const history = await db.query<{ message: string }>(`SELECT message FROM operation_status WHERE operation_id = $1 AND kind = 'LOG' ORDER BY id`, [id]);
    return { round, row: rows[0]!, history: history.rows.map((r) => r.message) };
  }

  /** A resolver answering `answers` for every name, counting its calls. */
  function resolver(...answers: string[][]) {
    const calls: string[] = [];
    const lookup: HostLookup = async (hostname) => {
      calls.push(hostname);
      const next = answers[Math.min(calls.length - 1, answers.length - 1)]!;
      return next.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
    };
    return { lookup, calls };
  }

  it("refuses a name resolving to loopback, metadata, private or mixed answers: a failed attempt saying why, nothing sent", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["127.0.0.1"], /^refused: hooks\.probe\.invalid resolves to 127\.0\.0\.1, a loopback address: webhooks reach internal addresses by name only when WEBHOOK_PRIVATE_NETWORKS lists them/],
      [["169.254.169.254"], /resolves to 169\.254\.169\.254, a link-local \(cloud metadata, 169\.254\.169\.254\) address/],
      [["10.1.2.3"], /resolves to 10\.1\.2\.3, a private address/],
      [["::ffff:127.0.0.1"], /resolves to ::ffff:127\.0\.0\.1, a loopback address/],
      [["fd00:ec2::254"], /resolves to fd00:ec2::254, a unique local/],
      // One public and one internal answer: the connection could take either.
      [["93.184.216.34", "192.168.0.10"], /resolves to 192\.168\.0\.10, a private address/],
    ];
    for (const [answers, reason] of cases) {
      const { lookup } = resolver(answers);
      const { round, row, history } = await sendOnce(`http://hooks.probe.invalid:${port}/hooks/x?token=t`, `http://hooks.probe.invalid:${port}/hooks`, lookup);
      expect([answers, round]).toEqual([answers, { claimed: 1, sent: 0, retryLater: 1, gaveUp: 0 }]);
      expect([answers, row.status, row.last_status]).toEqual([answers, "FAILED", null]);
      expect(row.last_error).toMatch(reason);
      expect(history).toEqual([expect.stringMatching(new RegExp(`^webhook http://hooks\\.probe\\.invalid:${port}/hooks/x: attempt 1 failed \\(refused: hooks\\.probe\\.invalid resolves to `))]);
    }
    expect(received).toEqual([]);
    // The system's own resolver: this machine's host name, when /etc/hosts or DNS gives it an
    // internal address (127.0.1.1 on Debian, the pod IP in Kubernetes), is refused the same way.
    const own = await dnsLookup(hostname(), { all: true }).catch(() => []);
    if (own.length > 0 && own.every((a) => internalAddressKind(a.address) !== undefined)) {
      const { row } = await sendOnce(`http://${hostname()}:${port}/hooks/own`, `http://${hostname()}:${port}/hooks`, undefined);
      expect(row.last_error).toMatch(new RegExp(`^refused: ${hostname()} resolves to `));
    }
    expect(received).toEqual([]);
    // `localhost` may reach loopback, nothing else.
    const { row } = await sendOnce(`http://localhost:${port}/hooks/l`, `http://localhost:${port}/hooks`, resolver(["10.0.0.1"]).lookup);
    expect(row.last_error).toMatch(/^refused: localhost resolves to 10\.0\.0\.1, a private address/);
    expect(received).toEqual([]);
  });

  it("delivers to an internal address listed in WEBHOOK_PRIVATE_NETWORKS, connecting to the address it checked (resolved once: a second answer is never used)", async () => {
    // A rebinding resolver: the first answer is the listed loopback, every later one the metadata address.
    const { lookup, calls } = resolver(["127.0.0.1"], ["169.254.169.254"]);
    const { round, row } = await sendOnce(`http://hooks.probe.invalid:${port}/hooks/ok`, `http://hooks.probe.invalid:${port}/hooks`, lookup, ["127.0.0.0/8"]);
    expect(round.sent).toBe(1);
    expect(row).toEqual({ status: "SENT", last_error: null, last_status: 200 });
    expect(calls).toEqual(["hooks.probe.invalid"]);
    // The Host header still names the host (virtual hosts and TLS use it).
    expect(received).toEqual([`hooks.probe.invalid:${port} /hooks/ok`]);

    // An IP literal in the allow-list is taken as written (no DNS asked); so is `localhost` answering loopback.
    const literal = resolver(["169.254.169.254"]);
    expect((await sendOnce(`http://127.0.0.1:${port}/hooks/literal`, `http://127.0.0.1:${port}/hooks`, literal.lookup)).row.status).toBe("SENT");
    expect(literal.calls).toEqual([]);
    expect((await sendOnce(`http://localhost:${port}/hooks/local`, `http://localhost:${port}/hooks`, resolver(["127.0.0.1"]).lookup)).row.status).toBe("SENT");
    expect(received).toHaveLength(3);
  });

  it("tries every checked answer in turn: a first answer that cannot be reached does not fail the send (as fetch did)", async () => {
    // The receiver listens on 127.0.0.1 only: ::1 (or 127.0.0.2, where IPv6 is off) refuses at once.
    const before = received.length;
    const { row } = await sendOnce(`http://hooks.probe.invalid:${port}/hooks/second`, `http://hooks.probe.invalid:${port}/hooks`, resolver(["::1", "127.0.0.1"]).lookup, ["::1/128", "127.0.0.0/8"]);
    expect(row).toEqual({ status: "SENT", last_error: null, last_status: 200 });
    expect(received.slice(before)).toEqual([`hooks.probe.invalid:${port} /hooks/second`]);
  });

  it("refuses an alert webhook whose host name resolves to an internal address, and sends it once the address is listed", async () => {
    const prefix = uniquePrefix("probe-alert-address");
    const redis = new Redis(testRedisUrl());
    try {
      const breakers = new LinkBreakers(redis, bullPrefix(prefix));
      const watchWith = (lookup: HostLookup, networks: string) =>
        new AlertWatch({
          db,
          breakers,
          workersOnline: async () => 1,
          window: undefined,
          settings: toAlertSettings(z.object(alertFields).parse({ ALERT_WEBHOOK_URL: `http://alerts.probe.invalid:${port}/slack`, ALERT_EVENTS: "run-finished=webhook", WEBHOOK_PRIVATE_NETWORKS: networks, ALERT_WEBHOOK_BACKOFF: "1ms" })),
          log: silent,
          lookup,
        });
      await raiseAlert(db, { event: "run-finished", dedupeKey: "probe-alert-1", summary: "probe run finished", details: {}, channels: ["webhook"] }, 100);
      const before = received.length;
      await watchWith(resolver(["169.254.169.254"]).lookup, "").check();
      const refused = await db.query<{ webhook_status: string; last_error: string }>(`SELECT webhook_status::text, last_error FROM alerts WHERE dedupe_key = 'probe-alert-1'`);
      expect(refused.rows).toEqual([{ webhook_status: "FAILED", last_error: expect.stringMatching(/^refused: alerts\.probe\.invalid resolves to 169\.254\.169\.254, a link-local \(cloud metadata/) }]);
      expect(received.length).toBe(before);
      // Listed, and resolved once: the rebinding second answer is never asked for.
      const listed = resolver(["127.0.0.1"], ["169.254.169.254"]);
      // Once the refused attempt's retry is due (1 ms backoff), one pass sends it.
      const deadline = Date.now() + 10_000;
      while ((await db.query(`SELECT 1 FROM alerts WHERE dedupe_key = 'probe-alert-1' AND webhook_next_at <= now()`)).rows.length === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await watchWith(listed.lookup, "127.0.0.1").check();
      const sent = (await db.query<{ webhook_status: string }>(`SELECT webhook_status::text FROM alerts WHERE dedupe_key = 'probe-alert-1'`)).rows[0]?.webhook_status;
      expect(sent).toBe("SENT");
      expect(listed.calls).toEqual(["alerts.probe.invalid"]);
      expect(received.slice(before)).toEqual([`alerts.probe.invalid:${port} /slack`]);
    } finally {
      await cleanupPrefix(testRedisUrl(), prefix);
      redis.disconnect();
    }
  });

  it("bounds the host's lookup by WEBHOOK_TIMEOUT: a resolver that does not answer fails the attempt in time", async () => {
    // The system resolver answers a dead DNS server only after its own timeouts (5 s per try
    // and server); past twice WEBHOOK_TIMEOUT the claim is reset as a dead sender's and the
    // delivery sent a second time. Here it never answers.
    const silentDns: HostLookup = () => new Promise(() => undefined);
    const settings = toWebhookSettings({ WEBHOOK_ALLOWED_URLS: [`http://hooks.probe.invalid:${port}/hooks`], WEBHOOK_SECRET: SECRET, WEBHOOK_BACKOFF: [60_000], WEBHOOK_TIMEOUT: 300 }, []);
    const id = `probe-op-${++operation}`;
    await queueCompletionWebhooks(db, { id, createdAt: Date.now() }, [`http://hooks.probe.invalid:${port}/hooks/dns`], { event: "operation.finished", operation: { id } });
    const before = received.length;
    const started = Date.now();
    const unanswered = Symbol("no answer");
    const round = await Promise.race([
      sendWebhooks({ db, settings, log: silent, signal: new AbortController().signal, lookup: silentDns }),
      new Promise<typeof unanswered>((resolve) => setTimeout(() => resolve(unanswered), 15_000).unref()),
    ]);
    expect(round).toEqual({ claimed: 1, sent: 0, retryLater: 1, gaveUp: 0 });
    expect(Date.now() - started).toBeLessThan(15_000);
    const { rows } = await db.query<{ status: string; last_error: string | null }>(`SELECT status::text AS status, last_error FROM webhook_deliveries WHERE operation_id = $1`, [id]);
    expect(rows[0]).toEqual({ status: "FAILED", last_error: "no answer within 300 ms" });
    expect(received.length).toBe(before);
  });

  it("judges NAT64 and 6to4 addresses by the IPv4 address they carry (an IPv6-only network with DNS64)", async () => {
    // DNS64 answers an IPv4-only receiver (8.8.8.8 here) as 64:ff9b::808:808: the whole prefix
    // was refused, so no webhook of such a network reached an IPv4-only receiver.
    for (const address of ["64:ff9b::808:808", "64:ff9b::8.8.8.8", "2002:808:808::1", "2002:5db8:d822:1::"]) {
      expect([address, internalAddressKind(address)]).toEqual([address, undefined]);
    }
    for (const address of ["64:ff9b::a9fe:a9fe", "64:ff9b::127.0.0.1", "64:ff9b::a00:5", "2002:a9fe:a9fe::", "2002:c0a8:101::1", "64:ff9b:1::a00:5"]) {
      expect([address, internalAddressKind(address)]).toEqual([address, expect.any(String)]);
    }
    expect(internalAddressKind("64:ff9b::a9fe:a9fe")).toMatch(/NAT64 of 169\.254\.169\.254, link-local/);
    const policy = { privateNetworks: toWebhookSettings({}, []).privateNetworks };
    const dns64: HostLookup = async () => [{ address: "64:ff9b::808:808", family: 6 }];
    expect(await webhookAddress(new URL("https://hooks.probe.invalid/x"), { ...policy, lookup: dns64 })).toMatchObject({ address: "64:ff9b::808:808", family: 6 });
    const metadata: HostLookup = async () => [{ address: "64:ff9b::a9fe:a9fe", family: 6 }];
    expect(await webhookAddress(new URL("https://hooks.probe.invalid/x"), { ...policy, lookup: metadata })).toMatchObject({ refused: expect.stringMatching(/169\.254\.169\.254/) });
  });

  it("knows the internal ranges and refuses a malformed WEBHOOK_PRIVATE_NETWORKS", () => {
    for (const address of ["127.0.0.1", "10.0.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254", "100.100.100.200", "0.0.0.0", "::1", "::", "fe80::1", "fd00:ec2::254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "224.0.0.1"]) {
      expect([address, internalAddressKind(address)]).toEqual([address, expect.any(String)]);
    }
    for (const address of ["93.184.216.34", "172.32.0.1", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"]) {
      expect([address, internalAddressKind(address)]).toEqual([address, undefined]);
    }
    expect(() => toWebhookSettings({ WEBHOOK_PRIVATE_NETWORKS: ["10.0.0.0/8", "10.0.0.0/33", "intranet", "fd00::/abc"] }, [])).toThrow(
      /WEBHOOK_PRIVATE_NETWORKS: "10\.0\.0\.0\/33" is not an IP address or CIDR range[\s\S]*"intranet"[\s\S]*"fd00::\/abc"/,
    );
  });
});
