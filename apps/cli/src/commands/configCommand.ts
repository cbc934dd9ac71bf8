import type { Command } from "commander";
import type { z } from "zod";
import { misspelledVariables, readEnvSources } from "@fleet/core/config";
import { redactCredentials } from "@fleet/core/logger";
import { dashboardSchema } from "@fleet/dashboard/config";
import { schedulerSchema } from "@fleet/scheduler/config";
import { workerSchema } from "@fleet/worker/config";
import { cliSchema } from "../config";
import { UsageError, print, reportFailure } from "../cliRun";

/**
 * `fleet config`: every variable of every app (worker, scheduler, cli, dashboard) with the value
 * each would use now — from the environment, the .env file, or its default — and where it came
 * from, secrets redacted. Values are checked against each app's schema: a value an app would
 * refuse is shown with why (the app would exit 2 with the same words).
 */
export const APP_SCHEMAS = { worker: workerSchema, scheduler: schedulerSchema, cli: cliSchema, dashboard: dashboardSchema } as const;
export type AppName = keyof typeof APP_SCHEMAS;

export interface ConfigRow {
  name: string;
  /** Effective value as text ([redacted] for secrets that are set); null when unset with no default. */
  value: string | null;
  source: "env" | ".env" | "default" | "unset";
  apps: AppName[];
  description: string;
  /** Apps whose defaults differ from `value` (LOG_LEVEL: the CLI's is warn). */
  defaults?: Partial<Record<AppName, string>>;
  /** An app that would refuse the value (or needs one): what it says. */
  problems?: Partial<Record<AppName, string>>;
}

// Values that grant access: shown as set or not, never their text. URLs keep everything but
// their credentials: a password in the user info, a token in the query (`?access_token=…`).
const SECRET = /PASSWORD|SECRET|TOKEN|PASSPHRASE|ACCESS_KEY_ID|SESSION_TOKEN|_USERS$/;

export function configRows(processEnv: NodeJS.ProcessEnv, only?: AppName): { rows: ConfigRow[]; envFile: string } {
  const { env, fromFile, envFile } = readEnvSources(processEnv);
  const rows = new Map<string, ConfigRow>();
  for (const app of Object.keys(APP_SCHEMAS) as AppName[]) {
    const shape = APP_SCHEMAS[app].shape as Record<string, z.ZodType>;
    for (const [name, field] of Object.entries(shape)) {
      const raw = env[name];
      const fallback = rawDefault(field);
      let row = rows.get(name);
      if (!row) {
        const source = raw !== undefined ? (fromFile.has(name) ? ".env" : "env") : fallback !== undefined ? "default" : "unset";
        row = { name, value: display(name, raw ?? fallback), source, apps: [], description: field.description ?? "" };
        rows.set(name, row);
      } else if (raw === undefined && fallback !== undefined && display(name, fallback) !== row.value) {
        (row.defaults ??= {})[app] = display(name, fallback)!;
      }
      row.apps.push(app);
      const parsed = field.safeParse(raw);
      if (!parsed.success) (row.problems ??= {})[app] = raw === undefined ? "required" : parsed.error.issues.map((i) => i.message).join("; ");
    }
  }
  return { rows: [...rows.values()].filter((r) => !only || r.apps.includes(only)), envFile };
}

function display(name: string, value: string | undefined): string | null {
  if (value === undefined) return null;
  if (SECRET.test(name)) return value === "" ? "" : "[redacted]";
  // A URL's credentials, wherever a value holds one (ACCOUNTS_CONSENT_URL with a token in its
  // query string was printed whole: found by a security review); the rest stays as written.
  return value.includes("://") ? redactCredentials(value) : value;
}

/** The default as it would be written in the environment (before any transform). */
function rawDefault(field: z.ZodType): string | undefined {
  const def = (field as unknown as { _zod: { def: { type: string; in?: z.ZodType; innerType?: z.ZodType; defaultValue?: unknown } } })._zod.def;
  if (def.type === "default") return text(def.defaultValue);
  if (def.type === "pipe" && def.in) return rawDefault(def.in);
  if ((def.type === "optional" || def.type === "nullable") && def.innerType) return rawDefault(def.innerType);
  return undefined;
}

function text(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "function") return text((value as () => unknown)());
  if (Array.isArray(value)) return value.join(",");
  return String(value);
}

export function formatConfig(rows: readonly ConfigRow[], envFile: string): string {
  const width = Math.max(...rows.map((r) => r.name.length));
  const valueWidth = Math.min(44, Math.max(...rows.map((r) => (r.value ?? "-").length)));
  const lines = rows.map((r) => {
    const extra = [
      ...(r.defaults ? Object.entries(r.defaults).map(([app, d]) => `${app} default: ${d}`) : []),
      ...(r.problems ? Object.entries(r.problems).map(([app, p]) => (p === "required" ? `required by ${app}` : `INVALID for ${app}: ${p}`)) : []),
    ];
    const value = r.value === null ? "-" : r.value === "" ? '""' : r.value;
    return `${r.name.padEnd(width)}  ${value.padEnd(valueWidth)}  ${r.source.padEnd(7)}  ${r.apps.join(",")}${extra.length ? `  (${extra.join("; ")})` : ""}`;
  });
  return [`${"variable".padEnd(width)}  ${"value".padEnd(valueWidth)}  ${"source".padEnd(7)}  apps   (.env file: ${envFile})`, ...lines].join("\n");
}

/**
 * Not run through the CLI's context: `fleet config` is how an operator looks at a configuration
 * the CLI itself may refuse, so it parses nothing up front.
 */
export function registerConfigCommand(program: Command, env: NodeJS.ProcessEnv): void {
  program
    .command("config")
    .description("every configuration variable of every app with the value in effect (secrets redacted) and where it came from: env, .env or default")
    .option("--app <name>", `only this app's variables (${Object.keys(APP_SCHEMAS).join(", ")})`)
    .option("--json", "machine-readable output")
    .action((opts: { app?: string; json?: boolean }) => {
      try {
        if (opts.app !== undefined && !(opts.app in APP_SCHEMAS)) throw new UsageError(`--app is one of ${Object.keys(APP_SCHEMAS).join(", ")}`);
        const { rows, envFile } = configRows(env, opts.app as AppName | undefined);
        const warnings = misspelledVariables(Object.values(APP_SCHEMAS), readEnvSources(env).env);
        print(opts.json, { envFile, variables: rows, warnings }, [formatConfig(rows, envFile), ...warnings.map((w) => `warning: ${w}`)].join("\n"));
      } catch (err) {
        process.exitCode = reportFailure(err, undefined);
      }
    });
}
