import { z } from "zod";
import { PermanentError } from "@fleet/core/errors";
import { createStorage } from "@fleet/storage/createStorage";
import { PrefixedStorage } from "@fleet/storage/prefixedStorage";
import type { Storage } from "@fleet/storage/storage";
import type { StorageConnection } from "@fleet/storage/storageConnection";
import { DESTINATION_TARGET, folderOf, isValidFolder, TARGET_REF } from "./targetRef";

export { DESTINATION_TARGET, TARGET_REF, targetRefField } from "./targetRef";

/** A TARGET_STORAGES name (a payload's target is validated in targetRef.ts). */
const NAME = /^[a-z][a-z0-9_-]{0,63}$/;
/** TARGET_STORAGES: `name=URL` entries, comma-separated; each must be a working storage URL. */
export const targetStoragesField = z
  .string()
  .optional()
  .transform((value, ctx) => {
    // Unset stays undefined (only `destination`), so the docs show no default.
    if (value === undefined) return undefined;
    const out = new Map<string, string>();
    for (const entry of value.split(",").map((s) => s.trim()).filter(Boolean)) {
      const eq = entry.indexOf("=");
      const name = entry.slice(0, Math.max(eq, 0));
      if (eq < 1 || !NAME.test(name)) ctx.addIssue({ code: "custom", message: `expected name=URL entries (name: lowercase letters, digits, - and _), got ${JSON.stringify(entry.slice(0, Math.max(eq, 0)) || "an entry without a name")}` });
      else if (name === DESTINATION_TARGET) ctx.addIssue({ code: "custom", message: `"${DESTINATION_TARGET}" is DESTINATION_URL already; choose another name` });
      else if (out.has(name)) ctx.addIssue({ code: "custom", message: `target "${name}" appears twice` });
      else out.set(name, entry.slice(eq + 1));
    }
    return out as ReadonlyMap<string, string>;
  });

/** Opens job targets by name with the destination's credentials and tuning. */
export class StorageTargets {
  constructor(
    private readonly urls: ReadonlyMap<string, string>,
    private readonly destinationUrl: string,
    private readonly connection: StorageConnection,
  ) {}

  /** Every name a payload may use. */
  names(): string[] {
    return [DESTINATION_TARGET, ...this.urls.keys()];
  }

  /**
   * A new storage for `ref` (the caller closes it), or PermanentError("invalid-payload") for
   * anything that is not a configured name with an optional folder under it.
   */
  open(ref: string): Storage {
    if (!TARGET_REF.test(ref)) {
      throw new PermanentError("invalid-payload", `target ${JSON.stringify(ref.slice(0, 200))}: not a configured storage name (${this.names().join(", ")}), optionally followed by /folder; URLs and paths are not accepted in job payloads`);
    }
    const slash = ref.indexOf("/");
    const name = slash < 0 ? ref : ref.slice(0, slash);
    const url = name === DESTINATION_TARGET ? this.destinationUrl : this.urls.get(name);
    if (url === undefined) {
      throw new PermanentError("invalid-payload", `target "${name}" is not a configured storage (known: ${this.names().join(", ")}; add it to TARGET_STORAGES)`);
    }
    const folder = folderOf(ref);
    if (folder !== "" && !isValidFolder(folder)) {
      throw new PermanentError("invalid-payload", `target ${JSON.stringify(ref.slice(0, 200))}: the folder after "${name}" must be a relative path without '..' or control characters`);
    }
    // DESTINATION_REQUIRE_MOUNT=true (a volume required from the first look) is about the
    // destination's own folder, not the other targets'. The fleet's volume records hold for
    // every local root, the other targets' too (an unpack into a named target must not fill an
    // empty mount point either: found by a review); DESTINATION_REQUIRE_MOUNT=false, which
    // turns the records off, turns them off for all of them.
    const { mountRequiredBy, ...others } = this.connection;
    const storage = createStorage(url, name === DESTINATION_TARGET || mountRequiredBy === undefined ? this.connection : others);
    return folder === "" ? storage : new PrefixedStorage(storage, folder);
  }
}
