import pino from "pino";
import type { Logger } from "pino";
import { z } from "zod";

export type { Logger };

/**
 * Paths whose values never reach a log line. Connection strings are scrubbed separately
 * (`redactUrl`) because they hide credentials inside a larger string.
 */
export const REDACT_PATHS = [
  "password",
  "*.password",
  "secret",
  "*.secret",
  "token",
  "*.token",
  "apiKey",
  "*.apiKey",
  "privateKey",
  "*.privateKey",
  "passphrase",
  "*.passphrase",
  "authorization",
  "*.authorization",
  "*.headers.authorization",
  "connectionString",
  "*.connectionString",
  "DATABASE_URL",
  "*.DATABASE_URL",
  "REDIS_URL",
  "*.REDIS_URL",
];

/** LOG_LEVEL and LOG_FORMAT of every app's config (re-exported by config.ts). */
export const logFields = {
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info").describe("pino log level"),
  LOG_FORMAT: z.enum(["auto", "json", "pretty"]).default("auto").describe("auto: pretty on a terminal, JSON otherwise"),
};

export type LogConfig = z.output<z.ZodObject<typeof logFields>>;

export interface LoggerOptions extends LogConfig {
  name: string;
  /** Defaults to stdout; tests pass a stream to capture lines. */
  destination?: pino.DestinationStream;
  /** Whether stdout is a terminal (decides pretty output for LOG_FORMAT=auto). */
  isTty?: boolean;
}

/** The root logger of an app. Everything else receives a child of it; nothing imports one. */
export function createLogger(options: LoggerOptions): Logger {
  const pretty = options.LOG_FORMAT === "pretty" || (options.LOG_FORMAT === "auto" && options.isTty === true);
  const base: pino.LoggerOptions = {
    name: options.name,
    level: options.LOG_LEVEL,
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    serializers: { err: pino.stdSerializers.err },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (options.destination) return pino(base, options.destination);
  if (pretty) {
    return pino({
      ...base,
      transport: { target: "pino-pretty", options: { colorize: true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname" } },
    });
  }
  return pino(base);
}

/**
 * Hides credentials anywhere in a text: the user-info of every `scheme://user:pass@host` (up to
 * the LAST `@` of the word, since a password may hold `/`, `:` or `@` unencoded, as in
 * `redis://user:RED/ISPW2@host`) and `password=`/`token=`-style query parameters. The user
 * name is kept when it is plainly one; anything odd is hidden whole.
 *
 * Linear in the text's length. It runs on whatever a job payload, an error or a log line holds
 * (up to the API's 1 MB bodies), in the dashboard's and the workers' event loops: the regular
 * expression it replaces, `([A-Za-z][A-Za-z0-9+.-]*:\/\/)(\S*)@`, backtracked from every
 * position of a long word (found by a security review: a 150 KB payload blocked the dashboard
 * for 10 s, a 300 KB one for 40 s). Same results as that expression (a test compares them).
 */
export function redactCredentials(text: string): string {
  const hidden = text.includes("://") && text.includes("@") ? text.replace(/\S+/g, redactUserInfo) : text;
  return hidden.replace(QUERY_PARAMETER, (whole: string, separator: string, name: string) => (SECRET_PARAMETER_NAME.test(name) ? `${separator}${name}=[redacted]` : whole));
}

// Every `name=value` after `?`, `&` or `;`; the name decides (below). Linear: a name cannot
// contain a separator, so matches never overlap, and a name without `=` is given up in one pass.
const QUERY_PARAMETER = /([?&;])([^=&\s#?;]+)=[^&\s#]*/g;
/**
 * Parameter names that carry secrets: any name containing password, secret, token, key,
 * credential, signature, session, auth… — `access_token`, `client_secret`, `refresh_token`,
 * `X-Goog-Signature`, Azure SAS `sig`, `key` (API keys). Before (2026-12-06 review) only a few
 * exact names were hidden, so a viewer of the board read `access_token=` and SAS signatures
 * in job payloads.
 */
const SECRET_PARAMETER_NAME = /pass|secret|token|key|credential|signature|^sig$|session|auth|private|jwt|bearer/i;
const PLAIN_USER = /^[A-Za-z0-9._~%-]+$/;

/**
 * One word (no whitespace): its first `scheme://` that has an `@` after it, with everything up
 * to the word's last `@` as the user-info. The scheme starts at the first letter of the run of
 * scheme characters before `://`, as the regular expression's leftmost match did; after that
 * match nothing is left to redact (no `@` follows the last one).
 */
function redactUserInfo(word: string): string {
  const lastAt = word.lastIndexOf("@");
  if (lastAt < 0) return word;
  for (let colon = word.indexOf("://"); colon >= 0 && colon < lastAt; colon = word.indexOf("://", colon + 1)) {
    let start = colon;
    while (start > 0 && isSchemeChar(word.charCodeAt(start - 1))) start--;
    while (start < colon && !isLetter(word.charCodeAt(start))) start++;
    if (start === colon) continue; // no letter before "://": not a scheme
    const info = word.slice(colon + 3, lastAt);
    const userEnd = info.indexOf(":");
    const user = userEnd < 0 ? "" : info.slice(0, userEnd);
    const shown = PLAIN_USER.test(user) ? `${user}:[redacted]` : "[redacted]";
    return `${word.slice(0, colon + 3)}${shown}${word.slice(lastAt)}`;
  }
  return word;
}

function isLetter(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

/** `[A-Za-z0-9+.-]` */
function isSchemeChar(c: number): boolean {
  return isLetter(c) || (c >= 48 && c <= 57) || c === 43 || c === 46 || c === 45;
}

/** `redis://user:secret@host` → `redis://user:[redacted]@host`, for logging where a URL is. */
export function redactUrl(url: string): string {
  return redactCredentials(url);
}
