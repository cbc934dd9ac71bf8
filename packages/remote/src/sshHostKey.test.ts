import { createHmac, randomBytes } from "node:crypto";
import { utils } from "ssh2";
import { createHostKeyCheck, fingerprintOf } from "./sshHostKey";

/** A fresh ed25519 public key: its blob, base64 and fingerprint. */
function newKey(): { blob: Buffer; base64: string; fingerprint: string } {
  const base64 = utils.generateKeyPairSync("ed25519").public.split(" ")[1] as string;
  const blob = Buffer.from(base64, "base64");
  return { blob, base64, fingerprint: fingerprintOf(blob) };
}

function hashedHost(name: string): string {
  const salt = randomBytes(20);
  return `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update(name).digest("base64")}`;
}

describe("host key checks", () => {
  const key = newKey();
  const other = newKey();

  it("formats fingerprints like ssh-keygen -l (SHA256, unpadded base64)", () => {
    expect(key.fingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
  });

  it("accepts exactly the configured key, by fingerprint (with or without padding) or known_hosts line", () => {
    for (const hostKey of [{ fingerprint: key.fingerprint }, { fingerprint: `${key.fingerprint}=` }, { knownHostsLine: `[h.example]:2222 ssh-ed25519 ${key.base64}` }]) {
      const check = createHostKeyCheck(hostKey, "h.example", 2222);
      expect(check.verify(other.blob)).toBe(false);
      expect(check.refusal()?.category).toBe("auth-failed");
      expect(check.refusal()?.message).toContain(other.fingerprint);
      expect(check.verify(key.blob)).toBe(true);
    }
  });

  it("matches known_hosts host fields as OpenSSH does: port form, lists, wildcards, negation, hashes", () => {
    const line = (hosts: string) => ({ knownHostsLine: `${hosts} ssh-ed25519 ${key.base64}` });
    expect(createHostKeyCheck(line("h.example"), "h.example", 22).verify(key.blob)).toBe(true);
    expect(createHostKeyCheck(line("a.example,H.EXAMPLE"), "h.example", 22).verify(key.blob)).toBe(true);
    expect(createHostKeyCheck(line("*.example"), "h.example", 22).verify(key.blob)).toBe(true);
    expect(createHostKeyCheck(line(hashedHost("[h.example]:2222")), "h.example", 2222).verify(key.blob)).toBe(true);
    // Port 22 entries do not name the port; other ports must be named.
    expect(() => createHostKeyCheck(line("h.example"), "h.example", 2222)).toThrow(/no key for \[h\.example\]:2222/);
    expect(() => createHostKeyCheck(line("*.example,!h.example"), "h.example", 22)).toThrow(/bad-config|no key/);
    expect(() => createHostKeyCheck(line(hashedHost("other.example")), "h.example", 22)).toThrow(/no key/);
  });

  it("uses the line's key type for negotiation and honours several lines and @revoked", () => {
    const text = [`# comment`, `h.example ssh-ed25519 ${key.base64}`, `@revoked h.example ssh-ed25519 ${other.base64}`, ""].join("\n");
    const check = createHostKeyCheck({ knownHostsLine: text }, "h.example", 22);
    expect(check.algorithms).toEqual(["ssh-ed25519"]);
    expect(check.verify(other.blob)).toBe(false);
    expect(check.refusal()?.message).toMatch(/revoked/);
    expect(check.verify(key.blob)).toBe(true);
    expect(createHostKeyCheck({ fingerprint: key.fingerprint }, "h", 22).algorithms).toBeUndefined();
  });

  it("refuses to run without a usable host key: no accept-any default", () => {
    expect(() => createHostKeyCheck(undefined, "h", 22)).toThrow(/no host key configured/);
    expect(() => createHostKeyCheck({}, "h", 22)).toThrow(/no host key configured/);
    expect(() => createHostKeyCheck({ fingerprint: "aa:bb:cc" }, "h", 22)).toThrow(/not a SHA256 fingerprint/);
    expect(() => createHostKeyCheck({ knownHostsLine: "h ssh-ed25519" }, "h", 22)).toThrow(/not "host keytype base64-key"/);
    expect(() => createHostKeyCheck({ knownHostsLine: `h ssh-rsa ${key.base64}` }, "h", 22)).toThrow(/not valid base64 of a ssh-rsa key/);
    expect(() => createHostKeyCheck({ knownHostsLine: `@cert-authority *.example ssh-ed25519 ${key.base64}` }, "h", 22)).toThrow(/not supported/);
    try {
      createHostKeyCheck({}, "h", 22);
    } catch (err) {
      expect(err).toMatchObject({ category: "bad-config", retryable: false });
    }
  });
});
