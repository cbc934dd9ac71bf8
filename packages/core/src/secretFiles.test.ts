import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { databaseFields, describeConfig, parseConfig, redisFields } from "./config";
import { ConfigError } from "./errors";
import { secret, secretNames } from "./secretFiles";

const schema = z.object({
  ...redisFields,
  ...databaseFields,
  API_TOKEN: secret(z.string().min(32, "at least 32 characters").optional().describe("a token")),
  PLAIN: z.string().default("x").describe("not a secret"),
});

function issuesOf(env: Record<string, string>): string[] {
  try {
    parseConfig(schema, env);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.issues];
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("NAME_FILE for secret variables", () => {
  const dir = mkdtempSync(join(tmpdir(), "fleet-secret-files-"));
  const file = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content, { mode: 0o600 });
    return path;
  };
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("knows which variables are secret, and says so in the docs", () => {
    expect(secretNames(schema)).toEqual(["REDIS_URL", "DATABASE_URL", "API_TOKEN"]);
    expect(describeConfig(schema).filter((v) => v.secret).map((v) => v.name)).toEqual(["REDIS_URL", "DATABASE_URL", "API_TOKEN"]);
  });

  it("reads the value from the file, dropping one trailing newline", () => {
    const config = parseConfig(schema, {
      DATABASE_URL_FILE: file("db", "postgresql://fleet:s3cret@db:5432/fleet\n"),
      API_TOKEN_FILE: file("token", "t".repeat(40) + "\r\n"),
    });
    expect(config.DATABASE_URL).toBe("postgresql://fleet:s3cret@db:5432/fleet");
    expect(config.API_TOKEN).toBe("t".repeat(40));
    expect(config.REDIS_URL).toBe("redis://127.0.0.1:6379");
  });

  it("an empty NAME next to NAME_FILE counts as unset (compose passes ${NAME:-} as an empty string)", () => {
    const config = parseConfig(schema, { REDIS_URL: "", REDIS_URL_FILE: file("redis", "redis://:pw@cache:6379") });
    expect(config.REDIS_URL).toBe("redis://:pw@cache:6379");
  });

  it("both NAME and NAME_FILE set: an error naming the variable", () => {
    const issues = issuesOf({ DATABASE_URL: "postgresql://a@b/c", DATABASE_URL_FILE: file("db2", "postgresql://x:hunter2@y/z") });
    expect(issues).toEqual(["DATABASE_URL: both DATABASE_URL and DATABASE_URL_FILE are set; set one"]);
  });

  it("a missing or unreadable file: an error naming the variable and the path, never a value", () => {
    const missing = join(dir, "nope");
    expect(issuesOf({ API_TOKEN_FILE: missing })).toEqual([`API_TOKEN: cannot read API_TOKEN_FILE ${missing} (ENOENT)`]);
    expect(issuesOf({ API_TOKEN_FILE: dir })).toEqual([`API_TOKEN: cannot read API_TOKEN_FILE ${dir} (EISDIR)`]);
    if (process.getuid?.() !== 0) {
      // root reads any file; elsewhere a file without read permission is refused.
      const locked = file("locked", "x");
      chmodSync(locked, 0o000);
      expect(issuesOf({ API_TOKEN_FILE: locked })[0]).toMatch(/^API_TOKEN: cannot read API_TOKEN_FILE .* \(EACCES\)$/);
    }
  });

  it("an invalid value from a file is reported without its content; other variables are still checked", () => {
    const issues = issuesOf({ API_TOKEN_FILE: file("short", "hunter2\n"), DATABASE_URL_FILE: file("db3", "mysql://u:hunter2@db/x"), PLAIN: "" });
    expect(issues).toHaveLength(2);
    expect(issues.find((i) => i.startsWith("API_TOKEN:"))).toBe("API_TOKEN: at least 32 characters (read from API_TOKEN_FILE) — a token");
    expect(issues.find((i) => i.startsWith("DATABASE_URL:"))).toContain("(read from DATABASE_URL_FILE)");
    expect(issues.join("\n")).not.toContain("hunter2");
  });

  it("a secret given in the environment is redacted in errors (URLs keep scheme and host)", () => {
    const issues = issuesOf({ API_TOKEN: "hunter2", REDIS_URL: "not a url with hunter2" });
    expect(issues.find((i) => i.startsWith("API_TOKEN:"))).toContain('(got "[redacted]")');
    expect(issues.join("\n")).not.toContain("hunter2");
    const db = issuesOf({ DATABASE_URL: "mysql://u:hunter2@db/x?password=hunter2" })[0]!;
    expect(db).toContain('(got "mysql://u:[redacted]@db/x")');
  });

  it("NAME_FILE is only honoured for secret variables", () => {
    expect(parseConfig(schema, { PLAIN_FILE: file("plain", "from-file") }).PLAIN).toBe("x");
  });
});
