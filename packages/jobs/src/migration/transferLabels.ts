import type { NamedLink } from "@fleet/db/sql/reports";
import type { Redis } from "ioredis";
import type { Storage } from "@fleet/storage/storage";

/**
 * Metric labels of a transfer: each adapter's kind (per-adapter sums: `sum by (destination)`)
 * and the link between the two configured locations (`local:/data → s3://archive/x/`). Labels
 * come from config, never from keys, so their number stays that of the configured storages;
 * storage labels never hold secrets.
 */
export function transferLabels(source: Storage, destination: Storage): { source: string; destination: string; link: string } {
  return { source: source.kind, destination: destination.kind, link: `${source.label} → ${destination.label}` };
}

/**
 * The link source → destination as the link reports name it (the label metrics and `fleet
 * settings --link` use), with the URI roots its outcomes are recorded under.
 */
export function namedLink(source: Storage, destination: Storage): NamedLink {
  const root = (storage: Storage) => {
    const probe = "fleet-link-root";
    const uri = storage.uri(probe);
    return uri.endsWith(probe) ? uri.slice(0, -probe.length) : uri;
  };
  return { source: source.label, destination: destination.label, sourceRoot: root(source), destinationRoot: root(destination) };
}

// The links the workers run, as `namedLink` gives them (a hash: "source → destination" → JSON).
const namedLinksKey = (prefix: string) => `${prefix}:named-links`;

/**
 * Records the link a worker runs, so views without the storage configuration (the dashboard)
 * name its outcomes as the CLI does: the dashboard's progress page said `file:// → file://`
 * where `fleet migrate status` said `local:/data → local:/archive` (found by a walk). Labels and
 * roots hold no secrets (storage labels never do).
 */
export async function recordNamedLink(redis: Redis, prefix: string, link: NamedLink): Promise<void> {
  await redis.hset(namedLinksKey(prefix), `${link.source} → ${link.destination}`, JSON.stringify(link));
}

/** The links workers recorded (recordNamedLink); an entry that does not read as one is skipped. */
export async function readNamedLinks(redis: Redis, prefix: string): Promise<NamedLink[]> {
  const entries = Object.values(await redis.hgetall(namedLinksKey(prefix)));
  return entries.flatMap((text) => {
    try {
      const l = JSON.parse(text) as Partial<NamedLink>;
      const fields = [l.source, l.destination, l.sourceRoot, l.destinationRoot];
      return fields.every((f) => typeof f === "string") ? [l as NamedLink] : [];
    } catch {
      return [];
    }
  });
}
