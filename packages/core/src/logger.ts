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
 */
export function redactCredentials(text: string): string {
  return text
    .replace(/([A-Za-z][A-Za-z0-9+.-]*:\/\/)(\S*)@/g, (_m, scheme: string, info: string) => {
      const colon = info.indexOf(":");
      const user = colon < 0 ? "" : info.slice(0, colon);
      return /^[A-Za-z0-9._~%-]+$/.test(user) ? `${scheme}${user}:[redacted]@` : `${scheme}[redacted]@`;
    })
    .replace(/([?&;](?:password|passwd|pass|secret|token|api[-_]?key|access[-_]?key|sslkey|sslpassword|x-amz-credential|x-amz-signature)=)[^&\s#]*/gi, "$1[redacted]");
}

/** `redis://user:secret@host` → `redis://user:[redacted]@host`, for logging where a URL is. */
export function redactUrl(url: string): string {
  return redactCredentials(url);
}
