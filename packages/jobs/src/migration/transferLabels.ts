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
