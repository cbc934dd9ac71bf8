import { spawn } from "node:child_process";
import { join } from "node:path";
import { ConfigError } from "@fleet/core/errors";
import { loadDashboardConfig } from "../src/config";
import { hashPassword, parsePasswordHash, verifyPassword } from "../src/passwords";

const cheap = { N: 1024, r: 8, p: 1 };

describe("dashboard config", () => {
  it("refuses to start without users and a session secret, saying what to add", () => {
    let error: unknown;
    try {
      loadDashboardConfig({});
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const issues = (error as ConfigError).issues.join("\n");
    expect(issues).toMatch(/^DASHBOARD_USERS: required: at least one user as name:role:hash/m);
    expect(issues).toMatch(/^DASHBOARD_SESSION_SECRET: required: a random secret of at least 32 characters/m);
  });

  it("names the bad user entry without echoing any hash, and rejects short secrets and tokens", async () => {
    const good = await hashPassword("correct horse", cheap);
    let error: unknown;
    try {
      loadDashboardConfig({
        DASHBOARD_USERS: `alice:admin:${good},bob:viewer:md5-of-something,alice:viewer:${good}`,
        DASHBOARD_SESSION_SECRET: "short-secret",
        DASHBOARD_API_TOKENS: "ci:read:tooshort",
      });
    } catch (err) {
      error = err;
    }
    const issues = (error as ConfigError).issues.join("\n");
    expect(issues).toContain('user "alice": role must be viewer or operator');
    expect(issues).toContain('user "bob": not a scrypt hash');
    expect(issues).toContain("DASHBOARD_SESSION_SECRET: at least 32 characters");
    expect(issues).toContain('token "ci": at least 32 characters');
    expect(issues).not.toContain(good);
    expect(issues).not.toContain("short-secret");
    expect(issues).not.toContain("tooshort");
  });

  it("parses users, roles and tokens; cookies are Secure unless turned off", async () => {
    const config = loadDashboardConfig({
      DASHBOARD_USERS: `alice:operator:${await hashPassword("pw-alice-1", cheap)}, bob:viewer:${await hashPassword("pw-bob-22", cheap)}`,
      DASHBOARD_SESSION_SECRET: "x".repeat(32),
      DASHBOARD_API_TOKENS: `ci:admin:${"t".repeat(40)}`,
    });
    expect([...config.DASHBOARD_USERS.values()].map((u) => [u.name, u.role])).toEqual([["alice", "operator"], ["bob", "viewer"]]);
    expect(config.DASHBOARD_API_TOKENS!.map((t) => t.name)).toEqual(["ci"]);
    expect(config.DASHBOARD_COOKIE_SECURE).toBe(true);
    expect(await verifyPassword("pw-bob-22", config.DASHBOARD_USERS.get("bob")!.password)).toBe(true);
    expect(await verifyPassword("pw-bob-23", config.DASHBOARD_USERS.get("bob")!.password)).toBe(false);
  });

  it("DASHBOARD_TRUST_PROXY: false, a number of proxies (true is one), or their addresses; anything else is refused by name", async () => {
    const base = { DASHBOARD_USERS: `alice:operator:${await hashPassword("pw-alice-1", cheap)}`, DASHBOARD_SESSION_SECRET: "x".repeat(32) };
    const trust = (value?: string) => loadDashboardConfig({ ...base, ...(value === undefined ? {} : { DASHBOARD_TRUST_PROXY: value }) }).DASHBOARD_TRUST_PROXY;
    expect([trust(), trust("false"), trust("true"), trust("2"), trust("10.0.0.0/8, 192.168.1.1 ,::1/128")]).toEqual([false, false, 1, 2, "10.0.0.0/8,192.168.1.1,::1/128"]);
    for (const bad of ["proxy.example", "10.0.0.0/33", "100", "1.2.3.4/8/9"]) {
      expect(() => trust(bad)).toThrow(ConfigError);
    }
  });
});

describe("hashPassword.js", () => {
  it("reads the password from stdin and prints a hash that verifies it (run after npm run build)", async () => {
    const script = join(__dirname, "..", "dist", "hashPassword.js");
    const child = spawn(process.execPath, [script], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stdin.end("a long enough password\n");
    const code = await new Promise((resolve) => child.on("exit", resolve));
    expect(code).toBe(0);
    const parsed = parsePasswordHash(out.trim())!;
    expect(parsed.N).toBe(32_768);
    expect(await verifyPassword("a long enough password", parsed)).toBe(true);
    expect(out).not.toContain("a long enough password");
  });
});

describe("main.js", () => {
  it("exits 2 and lists every missing variable when users and secret are not set (run after npm run build)", async () => {
    const child = spawn(process.execPath, [join(__dirname, "..", "dist", "main.js")], {
      env: { PATH: process.env.PATH, FLEET_ENV_FILE: join(__dirname, "no-such.env"), DASHBOARD_USERS: "alice:root:scrypt.1.2.3" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const code = await new Promise((resolve) => child.on("exit", resolve));
    expect(code).toBe(2);
    expect(err).toMatch(/^fleet dashboard: /);
    expect(err).toContain('DASHBOARD_USERS: user "alice": role must be viewer or operator');
    expect(err).toContain("DASHBOARD_SESSION_SECRET: required");
    expect(err).not.toContain("scrypt.1.2.3");
  });
});

