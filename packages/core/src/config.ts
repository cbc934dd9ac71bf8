import { readFileSync } from "node:fs";
import { parse as parseDotenv } from "dotenv";
import { z } from "zod";
import { parseDuration, parseDurationList } from "./backoff";
import { ConfigError } from "./errors";
import { isSecret, readSecretFiles, secret, secretNames } from "./secretFiles";
import { redactCredentials } from "./logger";
import type { Env } from "./secretFiles";

// Defined in the modules config.ts imports, so that neither imports config.ts back (no cycle);
// the apps take them from here.
export { logFields } from "./logger";
export type { LogConfig } from "./logger";
export type { Env } from "./secretFiles";

/**
 * Config is parsed once, in each app's main.ts, from the environment plus an optional .env
 * file, with one zod schema per app composed of the shared fragments below. Nothing else
 * reads process.env. Every variable carries a default or a clear error, and a one-line
 * description (zod `.describe`) that the README's reference and `fleet config` print.
 */

/**
 * The process environment overlaid on an optional .env file (the real environment wins, as
 * with dotenv). A missing file is fine; an unreadable one is a config error.
 */
export function readEnv(processEnv: Env, envFile = processEnv.FLEET_ENV_FILE ?? ".env"): Env {
  return readEnvSources(processEnv, envFile).env;
}

/** readEnv, plus where each value came from (`fleet config` shows it). */
export function readEnvSources(processEnv: Env, envFile = processEnv.FLEET_ENV_FILE ?? ".env"): { env: Env; fromFile: ReadonlySet<string>; envFile: string } {
  let fileValues: Record<string, string> = {};
  try {
    fileValues = parseDotenv(readFileSync(envFile));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new ConfigError([`FLEET_ENV_FILE: cannot read ${envFile}: ${(err as Error).message}`]);
    }
  }
  const fromFile = new Set(Object.keys(fileValues).filter((k) => processEnv[k] === undefined));
  return { env: { ...fileValues, ...processEnv }, fromFile, envFile };
}

/**
 * Parses env with an app's schema; on failure throws one ConfigError listing every bad
 * variable with what it expects. Secret variables may be given as NAME_FILE (see
 * secretFiles.ts); their values, from the environment or a file, never appear in an error.
 */
export function parseConfig<S extends z.ZodType>(schema: S, env: Env): z.output<S> {
  const shape = schema instanceof z.ZodObject ? (schema.shape as Record<string, z.ZodType>) : {};
  const secrets = secretNames(schema);
  const files = readSecretFiles(secrets, env);
  const result = schema.safeParse(files.env);
  if (result.success && files.issues.length === 0) return result.data;
  const broken = new Set(files.issues.map((issue) => issue.slice(0, issue.indexOf(":"))));
  const issues = (result.error?.issues ?? [])
    .filter((issue) => !broken.has(String(issue.path[0])))
    .map((issue) => {
      const name = issue.path.join(".") || "(config)";
      const described = shape[name]?.description;
      const got = typeof issue.path[0] === "string" ? files.env[issue.path[0]] : undefined;
      const gotText = files.fromFile.has(name)
        ? ` (read from ${name}_FILE)`
        : got === undefined
          ? ""
          : ` (got ${JSON.stringify(secrets.includes(name) ? redactSecret(got) : redactValue(name, got))})`;
      return `${name}: ${issue.message}${gotText}${described ? ` — ${described}` : ""}`;
    });
  throw new ConfigError([...files.issues, ...issues]);
}

/** A secret URL keeps its scheme and host (what operators need to see), never its password or query. */
function redactSecret(value: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return "[redacted]";
  // redactCredentials copes with '/' and '@' inside a password, where a simple pattern would not.
  return redactCredentials(value).replace(/\?.*$/, "");
}

function redactValue(name: string, value: string): string {
  if (/PASSWORD|SECRET|TOKEN|KEY|USERS/i.test(name)) return "[redacted]";
  return redactCredentials(value);
}

/** Lists a schema's variables with their descriptions and defaults, for docs and the CLI. */
export function describeConfig(schema: z.ZodObject): Array<{ name: string; description: string; default?: string; secret?: true }> {
  return Object.entries(schema.shape as Record<string, z.ZodType>).map(([name, field]) => {
    const parsed = field.safeParse(undefined);
    const value = parsed.success && parsed.data !== undefined ? parsed.data : undefined;
    return {
      name,
      description: field.description ?? "",
      ...(value === undefined ? {} : { default: formatDefault(value) }),
      ...(isSecret(field) ? { secret: true as const } : {}),
    };
  });
}

/** A parsed default as it would be written in the environment: lists and maps back to text. */
function formatDefault(value: unknown): string {
  if (Array.isArray(value)) return value.join(",");
  // A parsed value that can write itself back (a bandwidth timetable) says so.
  if (value !== null && typeof value === "object" && value.toString !== Object.prototype.toString) return String(value);
  if (value !== null && typeof value === "object") return Object.entries(value).map(([k, v]) => `${k}=${String(v)}`).join(",");
  return String(value);
}

// ---- field helpers: env values are strings; these give each a type and a default ----

export const envInt = (def: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number().int().min(min).max(max).default(def);

export const envBool = (def: boolean) =>
  z
    .enum(["true", "false", "1", "0", "yes", "no", "on", "off"], { message: "expected true or false" })
    .default(def ? "true" : "false")
    .transform((v) => ["true", "1", "yes", "on"].includes(v));

/** A yes/no whose absence means something of its own (unset or empty: undefined), so no default is shown. */
export const envBoolOrUnset = () =>
  z
    .enum(["true", "false", "1", "0", "yes", "no", "on", "off", ""], { message: "expected true or false (or leave it unset)" })
    .optional()
    .transform((v) => (v === undefined || v === "" ? undefined : ["true", "1", "yes", "on"].includes(v)));

/** Comma-separated list, trimmed, empties dropped. */
export const envList = (def: string) =>
  z
    .string()
    .default(def)
    .transform((v) => v.split(",").map((s) => s.trim()).filter(Boolean));

// ---- shared fragments, composed into each app's schema ----

export const redisFields = {
  REDIS_URL: secret(
    z
      .string()
      .url()
      .regex(/^rediss?:\/\//i, "expected a redis:// or rediss:// URL")
      .default("redis://127.0.0.1:6379")
      .describe("Redis used by BullMQ (redis:// or rediss://)"),
  ),
  FLEET_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]+$/, "letters, digits and _.:- only")
    .default("fleet")
    .describe("Key prefix of every queue in Redis; a hash tag {…} is added around it so queues work on Redis Cluster"),
};

export const databaseFields = {
  DATABASE_URL: secret(
    z
      .string()
      .regex(/^postgres(ql)?:\/\//, "expected a postgresql:// URL")
      .default("postgresql://postgres@127.0.0.1:5432/fleet")
      .describe("PostgreSQL holding Fleet's durable state"),
  ),
  DATABASE_POOL_SIZE: envInt(10, 1, 200).describe("Connections per process"),
};

/** What the running build is (fleet_build_info); the image build sets it, local builds say "unknown". */
/** The ops servers' (/healthz, /readyz, /metrics) bearer token for /metrics; a secret. */
export const opsTokenFields = {
  METRICS_TOKEN: secret(
    z
      .string()
      .min(32, "at least 32 characters (openssl rand -hex 32)")
      .optional()
      .describe("Bearer token /metrics of the ops server requires (unset: /metrics is open to whoever reaches the ops address); /healthz and /readyz stay open"),
  ),
};

export const buildFields = {
  FLEET_COMMIT: z.string().min(1).default("unknown").describe("Source commit of the running build, the commit label of fleet_build_info (the Dockerfile sets it from a build argument)"),
};

export type RedisConfig = z.output<z.ZodObject<typeof redisFields>>;
export type DatabaseConfig = z.output<z.ZodObject<typeof databaseFields>>;

/** A duration such as `30s`, `5m`, `2h`, `500ms` (plain numbers are ms); parsed to ms. */
export const envDuration = (def: string) =>
  z
    .string()
    .default(def)
    .transform((value, ctx) => {
      try {
        return parseDuration(value);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: err instanceof ConfigError ? err.issues.join("; ") : "expected a duration like 500ms, 30s, 5m, 2h" });
        return z.NEVER;
      }
    });

/** A list of durations: `30s,5m,10m`. */
export const envDurationList = (def: string) =>
  z
    .string()
    .default(def)
    .transform((value, ctx) => {
      try {
        return parseDurationList(value);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: err instanceof ConfigError ? err.issues.join("; ") : "expected durations separated by commas, like 30s,5m,10m" });
        return z.NEVER;
      }
    });

/**
 * Variables of `env` that look like misspellings of the schema's (`RUN_WINDOW` for
 * RUN_WINDOWS, `COPY_CONCURENCY`): upper-case names one or two edits away from a variable of
 * the schemas, which is not one itself (nor one of `alsoKnown`: another app's variables) nor a
 * secret's NAME_FILE. Fleet ignores variables it
 * does not know, so a typo silently left the default in force (found by a new operator's
 * walkthrough); the apps log these as warnings at start.
 */
export function misspelledVariables(schemas: z.ZodObject | readonly z.ZodObject[], env: Env, alsoKnown: readonly string[] = []): string[] {
  const list = Array.isArray(schemas) ? (schemas as readonly z.ZodObject[]) : [schemas as z.ZodObject];
  const known = [...new Set(list.flatMap((schema) => Object.keys(schema.shape as Record<string, z.ZodType>)))];
  const knownSet = new Set([...known, ...alsoKnown]);
  const secretFiles = new Set(list.flatMap((schema) => secretNames(schema)).map((name) => `${name}_FILE`));
  // Kubernetes injects service links for every Service in the namespace (`sftp` → SFTP_PORT=
  // tcp://…, SFTP_SERVICE_HOST, SFTP_PORT_22_TCP_ADDR…): not typos (found by review: "did you
  // mean SMTP_PORT?" at every start of a worker next to an SFTP server's Service).
  const services = new Set(Object.keys(env).flatMap((name) => /^(.+)_SERVICE_HOST$/.exec(name)?.[1] ?? []));
  const serviceLink = (name: string) =>
    /^tcp:\/\/|^udp:\/\//.test(env[name] ?? "") || /_PORT_\d+_(TCP|UDP|SCTP)/.test(name) || [...services].some((service) => name.startsWith(`${service}_`));
  const warnings: string[] = [];
  for (const name of Object.keys(env)) {
    if (knownSet.has(name) || secretFiles.has(name) || name.length < 6 || !/^[A-Z][A-Z0-9_]*$/.test(name) || serviceLink(name)) continue;
    const near = known.filter((k) => withinEdits(k, name, 2));
    if (near.length > 0) warnings.push(`${name} is not a Fleet variable (ignored): did you mean ${near.join(" or ")}?`);
  }
  return warnings;
}

/**
 * Whether the optimal string alignment distance (insertions, deletions, substitutions, adjacent
 * swaps) of `a` and `b` is at most `max`. Every process start compares each environment
 * variable with every known name: three rows allocated once and a stop once a whole row exceeds
 * `max` (a full matrix per pair took 25–300 ms of a start with a hundred variables, most of it
 * the garbage collector's).
 */
function withinEdits(a: string, b: string, max: number): boolean {
  if (Math.abs(a.length - b.length) > max) return false;
  const width = b.length + 1;
  if (editRows[0]!.length < width) editRows = [0, 1, 2].map(() => new Int32Array(width * 2));
  let [before, previous, current] = editRows as [Int32Array, Int32Array, Int32Array];
  for (let j = 0; j < width; j++) previous[j] = j;
  for (let i = 1; i <= a.length; i++) {
    current[0] = i;
    let rowMin = i;
    for (let j = 1; j < width; j++) {
      const cost = a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1;
      let v = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost);
      if (i > 1 && j > 1 && a.charCodeAt(i - 1) === b.charCodeAt(j - 2) && a.charCodeAt(i - 2) === b.charCodeAt(j - 1)) v = Math.min(v, before[j - 2]! + 1);
      current[j] = v;
      if (v < rowMin) rowMin = v;
    }
    if (rowMin > max) return false;
    [before, previous, current] = [previous, current, before];
  }
  return previous[width - 1]! <= max;
}

/** withinEdits' rows, reused across calls (grown for a longer name). */
let editRows: Int32Array[] = [0, 1, 2].map(() => new Int32Array(64));
