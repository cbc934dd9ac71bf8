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

/** How often a running worker records its link again (and prunes the others'): the link's heartbeat. */
export const NAMED_LINK_REFRESH_MS = 60 * 60_000;
/**
 * A link no worker recorded for this long is forgotten (pruneNamedLinks): every worker of a
 * link still running records it each NAMED_LINK_REFRESH_MS, so only links whose workers are
 * all gone (redeployed elsewhere, or the fleet stopped) age past it. A week, so that a finished
 * migration's page keeps naming its links for a while after its workers stopped.
 */
export const NAMED_LINK_KEEP_MS = 7 * 24 * 3_600_000;

// Deletes the fields whose recordedAt is older than ARGV[1] (or missing, or unreadable), in one
// step: a worker recording its link again at the same moment either lands before the script,
// and is kept, or after it, and is written anew; never read stale here and deleted fresh.
const PRUNE = `
local fields = redis.call('HGETALL', KEYS[1])
local removed = 0
for i = 1, #fields, 2 do
  local ok, entry = pcall(cjson.decode, fields[i + 1])
  local at = ok and type(entry) == 'table' and tonumber(entry['recordedAt']) or nil
  if at == nil or at < tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], fields[i])
    removed = removed + 1
  end
end
return removed`;

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
 * Forgets the links not recorded since `keepMs` before `now` (their workers are gone: links
 * recorded once stayed in the hash for good, found by a walk); returns how many. Safe with
 * several workers pruning and recording at once (one script, see PRUNE).
 */
export async function pruneNamedLinks(redis: Redis, prefix: string, now = Date.now(), keepMs = NAMED_LINK_KEEP_MS): Promise<number> {
  return Number(await redis.eval(PRUNE, 1, namedLinksKey(prefix), String(now - keepMs)));
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
