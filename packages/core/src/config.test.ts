import { redactCredentials } from "./logger";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { databaseFields, describeConfig, envBool, envDuration, envInt, misspelledVariables, parseConfig, readEnv, redisFields } from "./config";
import { ConfigError } from "./errors";

const schema = z.object({
  ...redisFields,
  ...databaseFields,
  WORKERS: envInt(2, 1, 10).describe("worker count"),
  ENABLED: envBool(true).describe("on or off"),
  GRACE: envDuration("30s").describe("grace period"),
});

describe("config", () => {
  it("applies defaults and types", () => {
    const c = parseConfig(schema, {});
    expect(c).toMatchObject({ REDIS_URL: "redis://127.0.0.1:6379", FLEET_PREFIX: "fleet", WORKERS: 2, ENABLED: true, GRACE: 30_000 });
  });

  it("parses given values", () => {
    const c = parseConfig(schema, { WORKERS: "7", ENABLED: "no", GRACE: "2m" });
    expect([c.WORKERS, c.ENABLED, c.GRACE]).toEqual([7, false, 120_000]);
  });

  it("lists every bad variable with what it expects, and redacts secrets in URLs", () => {
    let error: unknown;
    try {
      parseConfig(schema, { WORKERS: "eleven", ENABLED: "maybe", GRACE: "soon", DATABASE_URL: "mysql://u:hunter2@db/x" });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const issues = (error as ConfigError).issues;
    expect(issues).toHaveLength(4);
    expect(issues.find((i) => i.startsWith("WORKERS:"))).toContain("worker count");
    expect(issues.find((i) => i.startsWith("ENABLED:"))).toContain("expected true or false");
    expect(issues.find((i) => i.startsWith("GRACE:"))).toContain("is not a duration");
    const db = issues.find((i) => i.startsWith("DATABASE_URL:"))!;
    expect(db).toContain("postgresql://");
    expect(db).not.toContain("hunter2");
    expect((error as ConfigError).message).toContain("invalid configuration");
  });

  it("redacts any credentials in a bad URL: a / or @ in the password, a token as user, password= parameters", () => {
    const bad = {
      REDIS_URL: "redis://user:RED/ISPW2@cache:6379",
      DATABASE_URL: "postgresql://admin:p@ss/w:rd@db:5432/x?sslpassword=KEYPASS&application_name=a b",
    };
    let error: unknown;
    try {
      parseConfig(z.object({ ...redisFields, ...databaseFields }), bad);
    } catch (err) {
      error = err;
    }
    const text = (error as ConfigError).message;
    expect(text).toContain("REDIS_URL:");
    for (const secret of ["RED/ISPW2", "ISPW2", "p@ss", "w:rd", "KEYPASS"]) expect(text).not.toContain(secret);
    expect(text).toContain("redis://user:[redacted]@cache:6379");
    expect(redactCredentials("see s3://AKIA123:abc/def+ghi@bucket/key?X-Amz-Credential=AKIA123%2F&x=1")).toBe("see s3://AKIA123:[redacted]@bucket/key?X-Amz-Credential=[redacted]&x=1");
    expect(redactCredentials("https://ghp_tokenasuser@host/x")).toBe("https://[redacted]@host/x");
  });

  it("reads an optional .env file under the real environment", () => {
    const dir = mkdtempSync(join(tmpdir(), "fleet-config-"));
    const file = join(dir, ".env");
    writeFileSync(file, "WORKERS=5\nENABLED=false\n");
    const env = readEnv({ FLEET_ENV_FILE: file, ENABLED: "true" });
    expect(parseConfig(schema, env)).toMatchObject({ WORKERS: 5, ENABLED: true });
    expect(readEnv({ FLEET_ENV_FILE: join(dir, "missing.env") })).toEqual({ FLEET_ENV_FILE: join(dir, "missing.env") });
  });

  it("describes variables for docs", () => {
    const rows = describeConfig(schema);
    expect(rows.find((r) => r.name === "WORKERS")).toEqual({ name: "WORKERS", description: "worker count", default: "2" });
  });

  it("REDIS_URL must be a redis:// or rediss:// URL (an http:// one was taken, then reported as Redis not answering)", () => {
    const parse = (url: string) => () => parseConfig(z.object({ ...redisFields }), { REDIS_URL: url });
    expect(parse("http://127.0.0.1:6379")).toThrow(/REDIS_URL: expected a redis:\/\/ or rediss:\/\/ URL/);
    expect(parse("rediss://cache.example:6380/2")).not.toThrow();
  });

  it("names variables that look like misspellings of known ones (a typo silently left the default in force)", () => {
    const known = z.object({ RUN_WINDOWS: envBool(true), COPY_CONCURRENCY: envInt(16, 1), BATCH_SIZE: envInt(10_000, 1), ...databaseFields });
    const env = {
      RUN_WINDOW: "false", // one letter short
      COPY_CONCURENCY: "8", // one letter dropped
      BACTH_SIZE: "500", // two letters swapped
      BATCH_SIZE: "100", // known
      DATABASE_URL_FILE: "/run/secrets/db", // a secret given as a file
      HOSTNAME: "vm", // not Fleet's, and not close to a Fleet variable
      lower_case: "x",
    };
    expect(misspelledVariables(known, env)).toEqual([
      "RUN_WINDOW is not a Fleet variable (ignored): did you mean RUN_WINDOWS?",
      "COPY_CONCURENCY is not a Fleet variable (ignored): did you mean COPY_CONCURRENCY?",
      "BACTH_SIZE is not a Fleet variable (ignored): did you mean BATCH_SIZE?",
    ]);
    // Another app's variable is not a misspelling of this one's.
    expect(misspelledVariables(known, { RUN_WINDOW: "x" }, ["RUN_WINDOW"])).toEqual([]);
  });
});
