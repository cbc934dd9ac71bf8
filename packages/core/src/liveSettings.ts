import type { z } from "zod";
import type { Logger } from "./logger";
import { formatZodIssues } from "./zodIssues";

/**
 * Live settings: values an operator changes while the fleet runs (throttles, concurrency per
 * queue, run windows, breaker thresholds, pausing a link), without a restart.
 *
 * - The environment gives every value its default (each process parses it once, as ever).
 * - A stored value (the `settings` table, written by `fleet settings set` or the dashboard)
 *   overrides it; a value scoped to a link (`scope` = the link's label) overrides the fleet-wide
 *   one for that link only.
 * - Every value is text, as the environment would write it, checked by the same zod schema
 *   the variable has in the apps' config, when it is set and again whenever it is read.
 * - Each process re-reads the stored values every `intervalMs` (2 s by default) and tells its
 *   listeners what changed, so the fleet follows a change within a few seconds.
 *
 * `get(name)` is typed by the definitions: `settings.get("LINK_BWLIMIT")` is a timetable.
 */

export interface LiveSettingDefinition<S extends z.ZodType = z.ZodType> {
  /** The variable's zod schema (its input is the text form). */
  schema: S;
  /** Whether a value may be scoped to one link. */
  perLink?: boolean;
  /** One line for `fleet settings list` and the dashboard. */
  description: string;
}

export type LiveSettingDefinitions = Record<string, LiveSettingDefinition>;

export type LiveValue<D extends LiveSettingDefinitions, K extends keyof D> = z.output<D[K]["schema"]>;

/** A stored row as the loader returns it. */
export interface StoredValue {
  name: string;
  scope: string;
  value: string;
  updatedBy: string;
  updatedAt: Date;
}

/** Where a value in effect came from. */
export interface EffectiveValue<T = unknown> {
  value: T;
  /** The text form (what the environment or the stored row says). */
  text: string;
  source: "environment" | "fleet" | "link";
  updatedBy?: string;
  updatedAt?: Date;
}

export interface LiveSettingsOptions<D extends LiveSettingDefinitions> {
  definitions: D;
  /** The environment's values, as the app's config parsed them: the defaults. */
  defaults: { [K in keyof D & string]: LiveValue<D, K> };
  /** Their text, where known (for listings). */
  defaultTexts?: Partial<Record<keyof D & string, string>>;
  /** Reads every stored value (the settings table). */
  load: () => Promise<StoredValue[]>;
  log: Logger;
  intervalMs?: number;
}

type Listener = (changed: ReadonlySet<string>) => void;

export class LiveSettings<D extends LiveSettingDefinitions> {
  private readonly defaults = new Map<string, EffectiveValue>();
  /** `${name}\u0000${scope}` → parsed stored value. */
  private stored = new Map<string, EffectiveValue>();
  private readonly listeners = new Set<Listener>();
  private readonly warned = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private loading: Promise<void> | undefined;

  constructor(private readonly options: LiveSettingsOptions<D>) {
    for (const name of Object.keys(options.definitions) as Array<keyof D & string>) {
      this.defaults.set(name, { value: options.defaults[name], text: options.defaultTexts?.[name] ?? "", source: "environment" });
    }
  }

  /** The value in effect: the link's own, else the fleet's, else the environment's. */
  get<K extends keyof D & string>(name: K, link?: string): LiveValue<D, K> {
    return this.effective(name, link).value as LiveValue<D, K>;
  }

  /** The value in effect and where it came from. */
  effective<K extends keyof D & string>(name: K, link?: string): EffectiveValue<LiveValue<D, K>> {
    const found = (link !== undefined && this.options.definitions[name]?.perLink ? this.stored.get(key(name, link)) : undefined) ?? this.stored.get(key(name, "")) ?? this.defaults.get(name);
    if (!found) throw new Error(`unknown live setting ${name}`);
    return found as EffectiveValue<LiveValue<D, K>>;
  }

  /** Called after a refresh with the names whose value changed (for any scope). */
  onChange(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Loads once now (failing if the table cannot be read), then every `intervalMs`. */
  async start(): Promise<void> {
    await this.refresh();
    const every = this.options.intervalMs ?? 2_000;
    this.timer = setInterval(() => {
      this.refresh().catch((err: unknown) => this.options.log.warn({ err }, "could not read live settings; the last values read stay in effect"));
    }, every);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Re-reads the stored values; listeners hear of what changed. */
  refresh(): Promise<void> {
    this.loading ??= this.load().finally(() => (this.loading = undefined));
    return this.loading;
  }

  private async load(): Promise<void> {
    const rows = await this.options.load();
    const next = new Map<string, EffectiveValue>();
    for (const row of rows) {
      const def = this.options.definitions[row.name];
      if (!def || (row.scope !== "" && !def.perLink)) continue; // a setting of another release: not ours
      const parsed = def.schema.safeParse(row.value);
      if (!parsed.success) {
        const id = `${key(row.name, row.scope)}\u0000${row.value}`;
        if (!this.warned.has(id)) {
          this.warned.add(id);
          this.options.log.warn({ setting: row.name, scope: row.scope, value: row.value, issues: formatZodIssues(parsed.error.issues) }, "stored live setting is invalid: ignored, the environment's value applies");
        }
        continue;
      }
      next.set(key(row.name, row.scope), { value: parsed.data, text: row.value, source: row.scope === "" ? "fleet" : "link", updatedBy: row.updatedBy, updatedAt: row.updatedAt });
    }
    const changed = new Set<string>();
    for (const [k, v] of next) if (this.stored.get(k)?.text !== v.text) changed.add(k.split("\u0000")[0]!);
    for (const k of this.stored.keys()) if (!next.has(k)) changed.add(k.split("\u0000")[0]!);
    this.stored = next;
    if (changed.size === 0) return;
    this.options.log.info({ changed: [...changed] }, "live settings changed");
    for (const listener of this.listeners) {
      try {
        listener(changed);
      } catch (err) {
        this.options.log.error({ err, changed: [...changed] }, "applying a live setting failed");
      }
    }
  }
}

function key(name: string, scope: string): string {
  return `${name}\u0000${scope}`;
}
