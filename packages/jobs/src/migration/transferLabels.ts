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

// The links the workers run, as `namedLink` gives them (a hash: "source → destination" →
// JSON, with `recordedAt`, ms since the epoch).
const namedLinksKey = (prefix: string) => `${prefix}:named-links`;

/**
 * Records the link a worker runs, so views without the storage configuration (the dashboard)
 * name its outcomes as the CLI does: the dashboard's progress page said `file:// → file://`
 * where `fleet migrate status` said `local:/data → local:/archive` (found by a walk). Labels and
 * roots hold no secrets (storage labels never do). With when it was recorded: the counts know
 * locations only, so of two links under the same locations the latest recorded names them.
 */
export async function recordNamedLink(redis: Redis, prefix: string, link: NamedLink, now = Date.now()): Promise<void> {
  const { source, destination, sourceRoot, destinationRoot } = link;
  await redis.hset(namedLinksKey(prefix), `${source} → ${destination}`, JSON.stringify({ source, destination, sourceRoot, destinationRoot, recordedAt: now }));
}

/**
 * The links workers recorded (recordNamedLink), the latest recorded first (one recorded before
 * `recordedAt` was kept last): the first of them under a pair of locations names it, and the
 * hash keeps its fields in the order they were first set, so a link recorded once, long ago,
 * named for good the locations of every link recorded since (found by a review: a worker
 * redeployed from /data to /srv/in still showed as local:/data). An entry that does not read
 * as one is skipped.
 */
export async function readNamedLinks(redis: Redis, prefix: string): Promise<NamedLink[]> {
  const entries = Object.values(await redis.hgetall(namedLinksKey(prefix)));
  const links = entries.flatMap((text) => {
    try {
      const l = JSON.parse(text) as Partial<NamedLink> & { recordedAt?: unknown };
      const fields = [l.source, l.destination, l.sourceRoot, l.destinationRoot];
      if (!fields.every((f) => typeof f === "string")) return [];
      const link = { source: l.source, destination: l.destination, sourceRoot: l.sourceRoot, destinationRoot: l.destinationRoot } as NamedLink;
      return [{ link, at: typeof l.recordedAt === "number" ? l.recordedAt : 0 }];
    } catch {
      return [];
    }
  });
  return links.sort((a, b) => b.at - a.at).map((l) => l.link);
}
