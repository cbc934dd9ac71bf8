import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { PermanentError } from "@fleet/core/errors";

/**
 * Which host keys a server may present. At least one of the two must be set: there is no
 * "accept any key" mode, because an SSH connection to an unverified host hands our
 * credentials and data to whoever answers. When both are set, a key matching either is
 * accepted (handy while a host key is being rotated).
 */
export interface SshHostKey {
  /**
   * One or more known_hosts lines (newline-separated), as `ssh-keyscan -p PORT HOST` prints
   * them: `[host]:port ssh-ed25519 AAAA…` (`host ssh-ed25519 AAAA…` for port 22). Host
   * patterns (`*`, `?`, `!`), hashed names (`|1|…`) and `@revoked` are honoured;
   * `@cert-authority` is not supported.
   */
  knownHostsLine?: string;
  /** `SHA256:…` as `ssh-keygen -lf` prints it (trailing `=` optional). */
  fingerprint?: string;
}

/** The verdict of a host key check, kept so a refusal can be explained after the fact. */
export interface HostKeyCheck {
  /** For ssh2's `hostVerifier` (raw key blob in, accept or not out). */
  verify(blob: Buffer): boolean;
  /**
   * Host key algorithms to negotiate, when known_hosts entries tell us the key types (as
   * OpenSSH does): otherwise a server with several host keys may present one we don't know.
   */
  algorithms: string[] | undefined;
  /** Set once verify() refused a key: what was offered and what was expected. */
  refusal(): PermanentError | undefined;
}

interface KnownKey {
  type: string;
  blob: Buffer;
}

/** `SHA256:` + unpadded base64 of the key blob, exactly as `ssh-keygen -l` prints. */
export function fingerprintOf(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/**
 * Builds the check for one server. Throws PermanentError("bad-config") when nothing usable
 * is configured, so a missing host key stops a worker at startup, not at the first file.
 */
export function createHostKeyCheck(hostKey: SshHostKey | undefined, host: string, port: number): HostKeyCheck {
  const where = port === 22 ? host : `[${host}]:${port}`;
  const fingerprint = hostKey?.fingerprint?.trim() ? normaliseFingerprint(hostKey.fingerprint.trim()) : undefined;
  const { trusted, revoked } = hostKey?.knownHostsLine?.trim()
    ? parseKnownHosts(hostKey.knownHostsLine, where)
    : { trusted: [], revoked: [] };
  if (fingerprint === undefined && trusted.length === 0) {
    throw new PermanentError(
      "bad-config",
      hostKey?.knownHostsLine?.trim()
        ? `the configured known_hosts entries have no key for ${where} (check the host and port in them)`
        : `no host key configured for ${where}: set a known_hosts line or a SHA256 fingerprint (ssh-keyscan -p ${port} ${host} | ssh-keygen -lf -)`,
    );
  }

  let refused: PermanentError | undefined;
  const expected = [...trusted.map((k) => `${k.type} ${fingerprintOf(k.blob)}`), ...(fingerprint ? [fingerprint] : [])];
  return {
    algorithms: fingerprint === undefined ? hostKeyAlgorithms(trusted) : undefined,
    verify(blob) {
      const offered = fingerprintOf(blob);
      const isRevoked = revoked.some((k) => sameBytes(k.blob, blob));
      const ok = !isRevoked && (trusted.some((k) => sameBytes(k.blob, blob)) || offered === fingerprint);
      if (!ok) {
        refused = new PermanentError(
          "auth-failed",
          `host key verification failed for ${where}: the server presented ${keyTypeOf(blob) ?? "a"} key ${offered}` +
            (isRevoked ? ", which is marked @revoked" : `, expected ${expected.join(" or ")}`) +
            "; if the server's key really changed, update the configured known_hosts line or fingerprint",
        );
      }
      return ok;
    },
    refusal: () => refused,
  };
}

function normaliseFingerprint(value: string): string {
  const match = /^SHA256:([A-Za-z0-9+/]{43})=?$/.exec(value);
  if (!match) {
    throw new PermanentError(
      "bad-config",
      `host key fingerprint ${JSON.stringify(value.slice(0, 80))} is not a SHA256 fingerprint as ssh-keygen -l prints it (SHA256:<43 base64 characters>)`,
    );
  }
  return `SHA256:${match[1]}`;
}

function parseKnownHosts(text: string, where: string): { trusted: KnownKey[]; revoked: KnownKey[] } {
  const trusted: KnownKey[] = [];
  const revoked: KnownKey[] = [];
  for (const [index, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const fields = line.split(/\s+/);
    let marker: string | undefined;
    if (fields[0]?.startsWith("@")) marker = fields.shift();
    const [hosts, type, base64] = fields;
    const lineNo = index + 1;
    if (marker !== undefined && marker !== "@revoked") {
      throw new PermanentError("bad-config", `known_hosts line ${lineNo}: ${marker} entries are not supported`);
    }
    if (!hosts || !type || !base64) {
      throw new PermanentError("bad-config", `known_hosts line ${lineNo} is not "host keytype base64-key"`);
    }
    const blob = Buffer.from(base64, "base64");
    if (blob.length === 0 || keyTypeOf(blob) !== type) {
      throw new PermanentError("bad-config", `known_hosts line ${lineNo}: the key is not valid base64 of a ${type} key`);
    }
    if (!hostsMatch(hosts, where)) continue;
    (marker === "@revoked" ? revoked : trusted).push({ type, blob });
  }
  return { trusted, revoked };
}

/** known_hosts host field: comma-separated patterns, `!` negates, or one hashed `|1|salt|hash`. */
function hostsMatch(field: string, where: string): boolean {
  if (field.startsWith("|1|")) {
    const [, , salt, hash] = field.split("|");
    if (!salt || !hash) return false;
    const actual = createHmac("sha1", Buffer.from(salt, "base64")).update(where).digest();
    const wanted = Buffer.from(hash, "base64");
    return actual.length === wanted.length && timingSafeEqual(actual, wanted);
  }
  let matched = false;
  for (const pattern of field.split(",")) {
    const negated = pattern.startsWith("!");
    if (globMatch(negated ? pattern.slice(1) : pattern, where)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

function globMatch(pattern: string, text: string): boolean {
  const source = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${source}$`, "i").test(text);
}

/** The key type named at the start of an SSH public key blob (string type, …). */
function keyTypeOf(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const length = blob.readUInt32BE(0);
  if (length === 0 || length > 64 || blob.length < 4 + length) return undefined;
  return blob.subarray(4, 4 + length).toString("latin1");
}

function hostKeyAlgorithms(keys: KnownKey[]): string[] | undefined {
  const algorithms = new Set<string>();
  for (const { type } of keys) {
    // An RSA key is used with any of these signature algorithms; ssh2 picks the first both sides know.
    if (type === "ssh-rsa") for (const a of ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]) algorithms.add(a);
    else algorithms.add(type);
  }
  return algorithms.size > 0 ? [...algorithms] : undefined;
}

function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
