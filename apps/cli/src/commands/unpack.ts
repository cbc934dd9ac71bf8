import { PACKAGES_PREFIX, rangePackagesPrefix } from "@fleet/storage/package/packageManifest";
import type { Storage } from "@fleet/storage/storage";

/**
 * Manifest keys of the packages in a destination (TRANSFER_MODE=packaged), sorted: every
 * package, or those of one range. Listing is streamed; only the keys are kept.
 */
export async function listPackageManifests(destination: Storage, rangeId?: number): Promise<string[]> {
  const prefix = rangeId === undefined ? `${PACKAGES_PREFIX}/` : rangePackagesPrefix(rangeId);
  const keys: string[] = [];
  for await (const object of destination.list(prefix)) {
    if (object.key.endsWith(".manifest.json")) keys.push(object.key);
  }
  return keys.sort();
}
