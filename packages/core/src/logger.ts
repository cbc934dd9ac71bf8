import pino from "pino";
import type { Logger } from "pino";
import type { LogConfig } from "./config";

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

/** `redis://user:secret@host` → `redis://user:[redacted]@host`, for logging where a URL is. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "[redacted]";
    return parsed.toString();
  } catch {
    return url.replace(/\/\/([^:@/]*):([^@/]+)@/, "//$1:[redacted]@");
  }
}
