import { promises as dns } from "node:dns";
import http from "node:http";
import type { IncomingMessage } from "node:http";
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
  // NAT64 for the network's own use (RFC 8215): where it leads is the network's choice.
  ["64:ff9b:1::", 48, "ipv6", "local-use NAT64"],
  // IPv4-mapped (::ffff:a.b.c.d) are matched against the IPv4 ranges by BlockList itself;
  // NAT64 and 6to4 addresses are judged by the IPv4 address they carry (see EMBEDDING).
];
const INTERNAL_LISTS = INTERNAL.map(([net, prefix, type, kind]) => {
  const list = new BlockList();
  list.addSubnet(net, prefix, type);
  return { list, kind };
});

/**
 * IPv6 ranges that carry an IPv4 address (its first hextet's index in the address): the
 * well-known NAT64 prefix (64:ff9b::a.b.c.d, the last 32 bits) and 6to4 (2002:AABB:CCDD::,
 * bits 16-47). Such an address reaches that IPv4 host, so it is as internal as the host: an
 * IPv6-only network with DNS64 answers every IPv4-only receiver as 64:ff9b::…, and refusing the
 * whole range refused every such webhook (found by review).
 */
const EMBEDDING: ReadonlyArray<{ list: BlockList; at: number; kind: string }> = [
  { net: "64:ff9b::", prefix: 96, at: 6, kind: "NAT64" },
  { net: "2002::", prefix: 16, at: 1, kind: "6to4" },
].map(({ net, prefix, at, kind }) => {
  const list = new BlockList();
  list.addSubnet(net, prefix, "ipv6");
  return { list, at, kind };
});

/** What kind of internal address this is, or undefined for a public one. */
export function internalAddressKind(address: string): string | undefined {
  const type = isIP(address) === 6 ? "ipv6" : "ipv4";
  const kind = INTERNAL_LISTS.find(({ list }) => list.check(address, type))?.kind;
  if (kind !== undefined || type === "ipv4") return kind;
  const embedding = EMBEDDING.find(({ list }) => list.check(address, "ipv6"));
  if (embedding === undefined) return undefined;
  const hextets = ipv6Hextets(address);
  const ipv4 = [hextets[embedding.at]! >> 8, hextets[embedding.at]! & 0xff, hextets[embedding.at + 1]! >> 8, hextets[embedding.at + 1]! & 0xff].join(".");
  const inner = internalAddressKind(ipv4);
  return inner === undefined ? undefined : `${embedding.kind} of ${ipv4}, ${inner}`;
}

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a trailing dotted IPv4 read as two). */
function ipv6Hextets(address: string): number[] {
  const text = address.replace(/%.*$/, "");
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  const words = dotted ? `${text.slice(0, dotted.index)}${((Number(dotted[1]) << 8) | Number(dotted[2])).toString(16)}:${((Number(dotted[3]) << 8) | Number(dotted[4])).toString(16)}` : text;
  const [head = "", tail] = words.split("::");
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((h) => parseInt(h, 16)));
  const first = parse(head);
  const last = tail === undefined ? [] : parse(tail);
  return [...first, ...new Array<number>(8 - first.length - last.length).fill(0), ...last];
}

/**
 * WEBHOOK_PRIVATE_NETWORKS (or ACCOUNTS_CONSENT_PRIVATE_NETWORKS, named by `variable`): addresses
 * and CIDR ranges (`10.20.0.0/16`, `fd00:1::/64`, `192.168.1.5`) a name may resolve to.
 */
export function parsePrivateNetworks(entries: readonly string[], variable = "WEBHOOK_PRIVATE_NETWORKS"): { networks: BlockList; issues: string[] } {
  const networks = new BlockList();
  const issues: string[] = [];
  for (const entry of entries) {
    const [address = "", prefixText] = entry.split("/");
    const family = isIP(address);
    const max = family === 6 ? 128 : 32;
    const prefix = prefixText === undefined ? max : Number(prefixText);
    if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > max || (prefixText !== undefined && !/^\d+$/.test(prefixText))) {
      issues.push(`${variable}: "${entry}" is not an IP address or CIDR range (10.20.0.0/16, fd00:1::/64)`);
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
  /** How a refusal ends: what lets the address through (the webhooks' variables by default). */
  remedy?: string;
}

const isLocalhostName = (host: string) => host === "localhost" || host.endsWith(".localhost");

/**
 * The one address a send to `url` connects to, or why none may be used. Every answer of the
 * name must pass (an attacker who controls the record can mix a public and an internal one).
 * `signal` (the send's WEBHOOK_TIMEOUT and shutdown) bounds the lookup too, rejecting with its
 * reason: the system resolver answers only after its own timeouts (5 s per try and server), and
 * a send must not outlive WEBHOOK_TIMEOUT — twice that and its claim is reset as a dead sender's,
 * and the delivery is sent a second time beside it (found by review: fetch's timeout covered the
 * lookup, this one did not).
 */
export async function webhookAddress(url: URL, policy: AddressPolicy, signal?: AbortSignal): Promise<WebhookTarget | AddressRefused> {
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const literal = isIP(host);
  if (literal !== 0) return { address: host, family: literal, all: [{ address: host, family: literal }] };
  let answers: ReadonlyArray<{ address: string; family: number }>;
  try {
    answers = await abortable(policy.lookup(host), signal);
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    const e = err as Error & { code?: string };
    return { refused: `${host} does not resolve (${e.code ?? e.message})`, unresolved: e.code ?? e.message };
  }
  if (answers.length === 0) return { refused: `${host} does not resolve (no address)`, unresolved: "no address" };
  for (const { address, family } of answers) {
    const kind = internalAddressKind(address);
    if (kind === undefined) continue;
    if (isLocalhostName(host) && kind === "loopback") continue;
    if (policy.privateNetworks.check(address, family === 6 ? "ipv6" : "ipv4")) continue;
    return {
      refused: `${host} resolves to ${address}, a ${kind} address: ${policy.remedy ?? "webhooks reach internal addresses by name only when WEBHOOK_PRIVATE_NETWORKS lists them (or name the IP in WEBHOOK_ALLOWED_URLS)"}`,
    };
  }
  return { ...answers[0]!, all: answers };
}

/** Why no address may be used; `unresolved` (the resolver's code) when the name did not resolve at all, which may pass. */
export interface AddressRefused {
  refused: string;
  unresolved?: string;
}

/**
 * Where a send connects: the first checked answer, and every checked answer in the resolver's
 * order, which the connection tries in turn (Node's autoSelectFamily, on by default since Node 20: RFC 8305's happy
 * eyeballs), as fetch did: a host answering IPv6 first reaches a worker without an IPv6 route
 * through its IPv4 answer (found by review: only the first answer was tried).
 */
export interface WebhookTarget {
  address: string;
  family: number;
  all: ReadonlyArray<{ address: string; family: number }>;
}

/** `promise`, or the signal's reason once it aborts (what it waits for is left to finish on its own). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** A connection lookup that answers the checked addresses whatever it is asked: the socket connects where the check looked. */
export function pinnedLookup(target: WebhookTarget): LookupFunction {
  return ((_hostname: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    if (options?.all) callback(null, target.all.map((a) => ({ ...a })));
    else callback(null, target.address, target.family);
  }) as LookupFunction;
}

/**
 * GET `url` connected to `target` (already checked), as postPinned: no redirect is followed and
 * nothing resolves again. Resolves with the answer's head; its body is the caller's to read or
 * destroy.
 */
export function getPinned(url: URL, target: WebhookTarget, init: { headers: Record<string, string>; signal: AbortSignal }): Promise<IncomingMessage> {
  const client = url.protocol === "https:" ? https : http;
  return new Promise<IncomingMessage>((resolve, reject) => {
    const req = client.request(url, { method: "GET", headers: init.headers, lookup: pinnedLookup(target), signal: init.signal, agent: false }, resolve);
    req.on("error", (err) => reject(init.signal.aborted ? init.signal.reason : err));
    req.end();
  });
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
export function postPinned(url: URL, target: WebhookTarget, init: { headers: Record<string, string>; body: string; signal: AbortSignal; maxChars: number }): Promise<PostAnswer> {
  const client = url.protocol === "https:" ? https : http;
  return new Promise<PostAnswer>((resolve, reject) => {
    const req = client.request(url, { method: "POST", headers: { ...init.headers, "content-length": String(Buffer.byteLength(init.body)) }, lookup: pinnedLookup(target), signal: init.signal, agent: false }, (res) => {
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
