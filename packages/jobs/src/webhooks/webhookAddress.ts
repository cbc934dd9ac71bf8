import { promises as dns } from "node:dns";
import http from "node:http";
import https from "node:https";
import type { LookupFunction } from "node:net";
import { BlockList, isIP } from "node:net";

/**
 * Where a webhook may connect. WEBHOOK_ALLOWED_URLS allows host *names*, and a name's DNS
 * answer can change (a record pointed at 169.254.169.254, or DNS rebinding between a check and
 * the connection): the worker would then POST, and record the answer of, an internal service
 * (found by a security review). So each send resolves the host once, refuses an answer inside
 * the internal ranges below unless WEBHOOK_PRIVATE_NETWORKS lists it, and connects to exactly
 * the address it checked (the connection's own lookup returns it; nothing resolves twice).
 *
 * An allow-list entry that names an IP literal (`http://127.0.0.1:8080/hooks`) is taken as
 * written: no DNS is involved and the administrator named that address. `localhost` (and
 * `*.localhost`) may reach loopback only.
 */

/** Addresses no webhook reaches by name unless WEBHOOK_PRIVATE_NETWORKS lists them, with what they are (for the refusal). */
const INTERNAL: ReadonlyArray<[string, number, "ipv4" | "ipv6", string]> = [
  ["0.0.0.0", 8, "ipv4", "unspecified (this host)"],
  ["127.0.0.0", 8, "ipv4", "loopback"],
  ["10.0.0.0", 8, "ipv4", "private"],
  ["172.16.0.0", 12, "ipv4", "private"],
  ["192.168.0.0", 16, "ipv4", "private"],
  ["100.64.0.0", 10, "ipv4", "shared (carrier-grade NAT)"],
  ["169.254.0.0", 16, "ipv4", "link-local (cloud metadata, 169.254.169.254)"],
  ["192.0.0.0", 24, "ipv4", "IETF protocol assignments"],
  ["198.18.0.0", 15, "ipv4", "benchmarking"],
  ["224.0.0.0", 4, "ipv4", "multicast"],
  ["240.0.0.0", 4, "ipv4", "reserved"],
  ["::", 128, "ipv6", "unspecified (this host)"],
  ["::1", 128, "ipv6", "loopback"],
  ["fc00::", 7, "ipv6", "unique local (private; fd00:ec2::254 is cloud metadata)"],
  ["fe80::", 10, "ipv6", "link-local"],
  ["ff00::", 8, "ipv6", "multicast"],
  // Addresses that carry an IPv4 address inside: judged by it (NAT64, 6to4). IPv4-mapped
  // (::ffff:a.b.c.d) are matched against the IPv4 ranges by BlockList itself.
  ["64:ff9b::", 96, "ipv6", "NAT64 of an IPv4 address"],
  ["2002::", 16, "ipv6", "6to4 of an IPv4 address"],
];
const INTERNAL_LISTS = INTERNAL.map(([net, prefix, type, kind]) => {
  const list = new BlockList();
  list.addSubnet(net, prefix, type);
  return { list, kind };
});

/** What kind of internal address this is, or undefined for a public one. */
export function internalAddressKind(address: string): string | undefined {
  const type = isIP(address) === 6 ? "ipv6" : "ipv4";
  return INTERNAL_LISTS.find(({ list }) => list.check(address, type))?.kind;
}

/** WEBHOOK_PRIVATE_NETWORKS: addresses and CIDR ranges (`10.20.0.0/16`, `fd00:1::/64`, `192.168.1.5`) webhooks may reach by name. */
export function parsePrivateNetworks(entries: readonly string[]): { networks: BlockList; issues: string[] } {
  const networks = new BlockList();
  const issues: string[] = [];
  for (const entry of entries) {
    const [address = "", prefixText] = entry.split("/");
    const family = isIP(address);
    const max = family === 6 ? 128 : 32;
    const prefix = prefixText === undefined ? max : Number(prefixText);
    if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > max || (prefixText !== undefined && !/^\d+$/.test(prefixText))) {
      issues.push(`WEBHOOK_PRIVATE_NETWORKS: "${entry}" is not an IP address or CIDR range (10.20.0.0/16, fd00:1::/64)`);
      continue;
    }
    networks.addSubnet(address, prefix, family === 6 ? "ipv6" : "ipv4");
  }
  return { networks, issues };
}

/** A resolver: every address a host name has (dns.lookup's `all`). Injected by tests. */
export type HostLookup = (hostname: string) => Promise<ReadonlyArray<{ address: string; family: number }>>;
export const systemLookup: HostLookup = (hostname) => dns.lookup(hostname, { all: true, verbatim: true });

export interface AddressPolicy {
  lookup: HostLookup;
  /** Internal addresses webhooks may reach by name (WEBHOOK_PRIVATE_NETWORKS). */
  privateNetworks: BlockList;
}

const isLocalhostName = (host: string) => host === "localhost" || host.endsWith(".localhost");

/**
 * The one address a send to `url` connects to, or why none may be used. Every answer of the
 * name must pass (an attacker who controls the record can mix a public and an internal one).
 */
export async function webhookAddress(url: URL, policy: AddressPolicy): Promise<{ address: string; family: number } | { refused: string }> {
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const literal = isIP(host);
  if (literal !== 0) return { address: host, family: literal };
  let answers: ReadonlyArray<{ address: string; family: number }>;
  try {
    answers = await policy.lookup(host);
  } catch (err) {
    const e = err as Error & { code?: string };
    return { refused: `${host} does not resolve (${e.code ?? e.message})` };
  }
  if (answers.length === 0) return { refused: `${host} does not resolve (no address)` };
  for (const { address, family } of answers) {
    const kind = internalAddressKind(address);
    if (kind === undefined) continue;
    if (isLocalhostName(host) && kind === "loopback") continue;
    if (policy.privateNetworks.check(address, family === 6 ? "ipv6" : "ipv4")) continue;
    return {
      refused: `${host} resolves to ${address}, a ${kind} address: webhooks reach internal addresses by name only when WEBHOOK_PRIVATE_NETWORKS lists them (or name the IP in WEBHOOK_ALLOWED_URLS)`,
    };
  }
  return answers[0]!;
}

/** A connection lookup that answers `address` whatever it is asked: the socket connects where the check looked. */
export function pinnedLookup(address: string, family: number): LookupFunction {
  return ((_hostname: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    if (options?.all) callback(null, [{ address, family }]);
    else callback(null, address, family);
  }) as LookupFunction;
}

export interface PostAnswer {
  status: number;
  /** The first `maxChars` characters of the body. */
  text: string;
}

/**
 * POST to `url` connected to `address` (already checked): http(s).request, which never follows
 * a redirect (a 3xx is an answer like any other). TLS still verifies the certificate against
 * the URL's host name.
 */
export function postPinned(url: URL, target: { address: string; family: number }, init: { headers: Record<string, string>; body: string; signal: AbortSignal; maxChars: number }): Promise<PostAnswer> {
  const client = url.protocol === "https:" ? https : http;
  return new Promise<PostAnswer>((resolve, reject) => {
    const req = client.request(url, { method: "POST", headers: { ...init.headers, "content-length": String(Buffer.byteLength(init.body)) }, lookup: pinnedLookup(target.address, target.family), signal: init.signal, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        if (text.length < init.maxChars) text += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: text.slice(0, init.maxChars) }));
      res.on("error", reject);
      // Cut off mid-answer (the timeout, the receiver closing): an error, not a short answer.
      res.on("close", () => {
        if (!res.complete) reject(init.signal.aborted ? init.signal.reason : new Error("the connection closed before the answer ended"));
      });
    });
    req.on("error", (err) => reject(init.signal.aborted ? init.signal.reason : err));
    req.end(init.body);
  });
}
