/**
 * Database errors in an operator's words: what went wrong, where (host, port, database — never
 * the password), which variable to look at and what to do. `ECONNREFUSED` alone, or
 * `42P01: relation "migration_files" does not exist`, tells an operator nothing they can act on.
 * Shared by the CLI and by anything else that reports a database it cannot use.
 */
export interface DatabaseTarget {
  /** `127.0.0.1:5432`, or the socket directory. */
  where: string;
  database: string;
}

export function databaseTarget(connectionString: string): DatabaseTarget {
  try {
    const url = new URL(connectionString);
    const socket = url.searchParams.get("host");
    const host = socket ?? (url.hostname || "localhost");
    const where = socket ? socket : `${host}:${url.port || "5432"}`;
    return { where, database: decodeURIComponent(url.pathname.replace(/^\//, "")) || decodeURIComponent(url.username) || "postgres" };
  } catch {
    return { where: "(unparseable DATABASE_URL)", database: "?" };
  }
}

const SCHEMA_CODES = new Set(["42P01", "42703", "42883", "42704", "42P02"]);
const CONNECT_CODES: Record<string, string> = {
  ECONNREFUSED: "refused the connection: is PostgreSQL running there?",
  ENOTFOUND: "is a host name that does not resolve",
  EAI_AGAIN: "is a host name that does not resolve (DNS did not answer)",
  EHOSTUNREACH: "cannot be reached (no route to host)",
  ENETUNREACH: "cannot be reached (network unreachable)",
  ETIMEDOUT: "did not answer in time",
  ECONNRESET: "closed the connection",
};

/**
 * An operator-facing sentence for an error of the database at `connectionString`, or undefined
 * when `err` is not a database error (then the caller reports it as it is). `variable` names
 * the setting that points at the database.
 */
export function describeDatabaseError(err: unknown, connectionString: string, variable = "DATABASE_URL"): string | undefined {
  const { where, database } = databaseTarget(connectionString);
  const at = `PostgreSQL at ${where}`;
  const code = codeOf(err);
  const message = err instanceof Error ? err.message : String(err);
  if (code && SCHEMA_CODES.has(code)) {
    return `the database "${database}" at ${where} lacks Fleet's tables or is older than this Fleet (${message}): run \`fleet db migrate\` (or fix ${variable} if it points at the wrong database)`;
  }
  switch (code) {
    case "3D000":
      return `${at} has no database "${database}": run \`fleet db migrate\` (it creates the database) or fix ${variable}`;
    case "28P01":
    case "28000":
      return `${at} refused the login (${message}): check the user and password in ${variable}, and pg_hba.conf`;
    case "57P03":
      return `${at} is starting up or shutting down (${message}): try again in a moment`;
    case "53300":
      return `${at} has no connection left (${message}): lower DATABASE_POOL_SIZE of the fleet's processes or raise max_connections`;
  }
  if (code && CONNECT_CODES[code]) return `${at} ${CONNECT_CODES[code]} (${code}; set ${variable})`;
  if (/timeout expired|timeout exceeded when trying to connect|Connection terminated due to connection timeout/i.test(message)) {
    return `${at} did not accept a connection in time (${message}): is it running and reachable? (set ${variable})`;
  }
  if (/Connection terminated unexpectedly/i.test(message)) return `${at} closed the connection (${message}): did it restart? (set ${variable})`;
  return undefined;
}

/**
 * SQLSTATE or errno code; Node's happy-eyeballs connect gives an AggregateError of attempts,
 * and the pool wraps an unavailable database in RetryableError("database") with the pg error
 * as its cause.
 */
function codeOf(err: unknown): string | undefined {
  if (!err || typeof err !== "object") return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string") return code;
  const cause = (err as { cause?: unknown }).cause;
  if (cause !== undefined && cause !== err) {
    const c = codeOf(cause);
    if (c) return c;
  }
  const inner = (err as { errors?: unknown[] }).errors;
  if (Array.isArray(inner)) for (const e of inner) {
    const c = codeOf(e);
    if (c) return c;
  }
  return undefined;
}
