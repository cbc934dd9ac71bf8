import type { NamedLink } from "@fleet/db/sql/reports";
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
