import { parentKey } from "./keys";

/**
 * The folders an adapter's writes went into, so that invalidate() can make its folder cache
 * (ConfinedRoot, SftpDirectories) forget them — every one and its parents, but never the root.
 *
 * Why not clear the whole cache: those caches create the root when they have to verify it
 * again for a write. Kept verified, a root that vanished mid-run makes writes fail (mkdir of a
 * folder under it: ENOENT) instead of being re-created; writes also verify the root without
 * creating it (ensureDir("", false)) before anything else, for when the cache evicted it.
 *
 * Bounded: the caches keep at most a few thousand folders, first in first out; this keeps the
 * most recent `max` first uses, which covers them.
 */
export class UsedFolders {
  private readonly keys = new Set<string>();

  constructor(private readonly max = 8192) {}

  add(dirKey: string): void {
    if (dirKey === "" || this.keys.has(dirKey)) return;
    this.keys.add(dirKey);
    if (this.keys.size > this.max) {
      const oldest = this.keys.values().next();
      if (!oldest.done) this.keys.delete(oldest.value);
    }
  }

  /** Calls `forget` for every used folder and its parents (each once), never for the root. */
  forgetAll(forget: (dirKey: string) => void): void {
    const done = new Set<string>();
    for (const key of this.keys) {
      for (let k = key; k !== "" && !done.has(k); k = parentKey(k)) {
        done.add(k);
        forget(k);
      }
    }
    this.keys.clear();
  }
}
