import { readFileSync } from "node:fs";
import { z } from "zod";

/** An environment as read (process.env or a parsed .env file); re-exported by config.ts. */
export type Env = Readonly<Record<string, string | undefined>>;

/**
 * Secret variables may come from a file instead of the environment: `NAME_FILE=/run/secrets/x`
 * reads NAME from that file at startup (Docker/Kubernetes secrets mounted as files, a Vault
 * agent's output), so the value never sits in the process environment, `docker inspect` or a
 * crash dump of env. Setting both NAME and NAME_FILE is an error (which one wins would be a
 * guess); an unreadable file is a config error naming the variable and the path, never the
 * content. One trailing newline is dropped (`echo secret > file` writes one).
 */

/** Marks a config field as secret: settable as NAME_FILE, never echoed in config errors. */
export function secret<T extends z.ZodType>(field: T): T {
  return field.meta({ ...z.globalRegistry.get(field), secret: true }) as T;
}

export function isSecret(field: z.ZodType): boolean {
  return z.globalRegistry.get(field)?.secret === true;
}

/** The secret variables of a schema (the ones that accept NAME_FILE). */
export function secretNames(schema: z.ZodType): string[] {
  if (!(schema instanceof z.ZodObject)) return [];
  return Object.entries(schema.shape as Record<string, z.ZodType>)
    .filter(([, field]) => isSecret(field))
    .map(([name]) => name);
}

export interface ResolvedSecrets {
  env: Env;
  /** Variables whose value was read from NAME_FILE. */
  fromFile: ReadonlySet<string>;
  /** Config issues (conflicts, unreadable files), one per variable. */
  issues: string[];
}

/** Replaces each secret NAME_FILE by NAME's value read from that file. */
export function readSecretFiles(names: readonly string[], env: Env): ResolvedSecrets {
  const out: Record<string, string | undefined> = { ...env };
  const fromFile = new Set<string>();
  const issues: string[] = [];
  for (const name of names) {
    const path = env[`${name}_FILE`];
    if (path === undefined || path === "") continue;
    // An empty NAME counts as unset: compose files pass `${NAME:-}` through as "".
    if (env[name] !== undefined && env[name] !== "") {
      issues.push(`${name}: both ${name} and ${name}_FILE are set; set one`);
      continue;
    }
    try {
      out[name] = readFileSync(path, "utf8").replace(/\r?\n$/, "");
      fromFile.add(name);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "error";
      issues.push(`${name}: cannot read ${name}_FILE ${path} (${code})`);
    }
  }
  return { env: out, fromFile, issues };
}
