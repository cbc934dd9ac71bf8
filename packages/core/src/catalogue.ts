import type { AnyJobDefinition } from "./jobDefinition";

/**
 * A validated set of job definitions, checked once at startup. Duplicate names, names the
 * catalogue declares but nobody defines, and definitions on undeclared queues all stop the
 * process with a message saying exactly what to change.
 */
export class Catalogue<Defs extends Record<string, AnyJobDefinition>> {
  readonly definitions: Defs;
  readonly queues: readonly string[];
  private readonly byName: ReadonlyMap<string, AnyJobDefinition>;

  constructor(definitions: Defs, byName: ReadonlyMap<string, AnyJobDefinition>, queues: readonly string[]) {
    this.definitions = definitions;
    this.byName = byName;
    this.queues = queues;
  }

  get(name: string): AnyJobDefinition | undefined {
    return this.byName.get(name);
  }

  /** Definitions carried by one queue. */
  onQueue(queue: string): AnyJobDefinition[] {
    return [...this.byName.values()].filter((d) => d.queue === queue);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }
}

export class CatalogueError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`job catalogue is inconsistent:\n  ${problems.join("\n  ")}`);
    this.name = "CatalogueError";
  }
}

export interface CatalogueSpec<Defs extends Record<string, AnyJobDefinition>> {
  /** Every job name the product declares (an enum-like list). */
  declaredNames: readonly string[];
  /** Every queue name the product declares. */
  queues: readonly string[];
  /** The definitions, keyed by job name. */
  definitions: Defs;
  /** Extra definitions registered at runtime (plugins); checked like the rest. */
  extra?: readonly AnyJobDefinition[];
  /** Where definitions live, for the error message. */
  sourceHint?: string;
}

export function buildCatalogue<Defs extends Record<string, AnyJobDefinition>>(spec: CatalogueSpec<Defs>): Catalogue<Defs> {
  const problems: string[] = [];
  const hint = spec.sourceHint ?? "packages/jobs/src/processors.ts";
  const byName = new Map<string, AnyJobDefinition>();
  const all: Array<[string, AnyJobDefinition]> = [
    ...Object.entries(spec.definitions),
    ...(spec.extra ?? []).map((d): [string, AnyJobDefinition] => [d.name, d]),
  ];
  for (const [key, def] of all) {
    if (key !== def.name) problems.push(`catalogue key "${key}" holds the definition named "${def.name}": make them equal`);
    if (byName.has(def.name)) {
      problems.push(`job "${def.name}" has two handlers: remove one of the definitions named "${def.name}" (${hint})`);
      continue;
    }
    if (!spec.queues.includes(def.queue)) {
      problems.push(`job "${def.name}" uses queue "${def.queue}", which is not declared: add it to the queue names or fix the definition`);
    }
    if (!spec.declaredNames.includes(def.name)) {
      problems.push(`job "${def.name}" is not declared: give its processor file a contract and a FleetJobRegistry entry, and list it in ${hint}`);
    }
    if (typeof def.handle !== "function") problems.push(`job "${def.name}" has no handle() function`);
    byName.set(def.name, def);
  }
  for (const name of spec.declaredNames) {
    if (!byName.has(name)) {
      problems.push(`job "${name}" is declared but has no handler: write a definition for it and list it in ${hint}`);
    }
  }
  if (problems.length > 0) throw new CatalogueError(problems);
  return new Catalogue(spec.definitions, byName, spec.queues);
}
