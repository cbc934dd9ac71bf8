import type { Queryable } from "@fleet/db/pool";
import { tarUrisWithRows } from "@fleet/db/sql/packageRows";
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

/**
 * The packages of a destination (or of one range) that migration_files rows point at, and the
 * orphans beside them: packages no row points at, left by a pack that crashed before its rows
 * were written (see tarUrisWithRows). `unpack --all` and `--range` restored those too. A manifest names its tar by the layout of packageKeys:
 * `part-F-L.manifest.json` beside `part-F-L.tar`.
 */
export async function listMigratedPackages(db: Queryable, destination: Storage, rangeId?: number): Promise<{ manifests: string[]; orphans: string[] }> {
  const all = await listPackageManifests(destination, rangeId);
  const tarUri = (manifest: string) => destination.uri(`${manifest.slice(0, -".manifest.json".length)}.tar`);
  const pointed = await tarUrisWithRows(db, all.map(tarUri), rangeId);
  const manifests: string[] = [];
  const orphans: string[] = [];
  for (const key of all) (pointed.has(tarUri(key)) ? manifests : orphans).push(key);
  return { manifests, orphans };
}
