import { PermanentError } from "@fleet/core/errors";
import { validateKey } from "../keys";

/**
 * Packaged transfers (TRANSFER_MODE=packaged): many small files shipped as one tar object
 * plus a JSON manifest, because with small objects every storage charges per request
 * (see docs/architecture.md "Packaged transfers"). This file is the format both sides agree
 * on: where packages live, what a manifest holds, and how a member is named in a URI.
 *
 * Layout in the destination (one folder per range; a part is named by the first and last
 * source file id it was cut for, so a re-run of the same files rewrites the same keys):
 *
 *     .fleet-packages/range-<rangeId>/part-<firstFileId>-<lastFileId>.tar
 *     .fleet-packages/range-<rangeId>/part-<firstFileId>-<lastFileId>.manifest.json
 */

export const PACKAGE_FORMAT = "fleet-package/1";
export const PACKAGES_PREFIX = ".fleet-packages";

/** One file inside a package: a tar member named by its source key. */
export interface PackageMember {
  /** The member's name in the tar: the file's source key (and its key when unpacked). */
  path: string;
  size: number;
  /** sha256 hex of the member's bytes. */
  sha256: string;
  /** source_files.id */
  fileId: number;
}

export interface PackageManifest {
  format: typeof PACKAGE_FORMAT;
  rangeId: number;
  /** The source file ids the package was cut for (members are a subset: failed reads are left out). */
  firstFileId: number;
  lastFileId: number;
  tar: { key: string; uri: string; size: number; sha256: string };
  /** In tar order. */
  members: PackageMember[];
}

export interface PackageKeys {
  tar: string;
  manifest: string;
}

export function packageKeys(rangeId: number, firstFileId: number, lastFileId: number): PackageKeys {
  const base = `${rangeFolder(rangeId)}/part-${firstFileId}-${lastFileId}`;
  return { tar: `${base}.tar`, manifest: `${base}.manifest.json` };
}

/** The folder (key prefix, with its trailing slash) holding every package of a range. */
export function rangePackagesPrefix(rangeId: number): string {
  return `${rangeFolder(rangeId)}/`;
}

function rangeFolder(rangeId: number): string {
  return `${PACKAGES_PREFIX}/range-${rangeId}`;
}

/**
 * What migration_files.new_uri records for a packaged file: the tar's URI, `#`, and the
 * member path with each segment percent-encoded (so `#`, `?` and spaces in names stay
 * unambiguous), e.g. `s3://bucket/.fleet-packages/range-3/part-41-90.tar#dir/a%20b.txt`.
 */
export function memberUri(tarUri: string, path: string): string {
  return `${tarUri}#${path.split("/").map(encodeURIComponent).join("/")}`;
}

/** The manifest as stored: pretty enough to read, one member per line. */
export function serializeManifest(manifest: PackageManifest): Buffer {
  const { members, ...head } = manifest;
  const lines = members.map((m) => `    ${JSON.stringify(m)}`);
  const headJson = JSON.stringify(head, null, 2);
  return Buffer.from(`${headJson.slice(0, -2)},\n  "members": [\n${lines.join(",\n")}\n  ]\n}\n`);
}

/** Parses and checks a manifest; anything malformed is PermanentError("archive-corrupt"). */
export function parseManifest(bytes: Buffer, key: string): PackageManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    throw corrupt(key, `is not JSON (${(err as Error).message})`, err);
  }
  const m = raw as Partial<PackageManifest> | null;
  if (!m || typeof m !== "object") throw corrupt(key, "is not an object");
  if (m.format !== PACKAGE_FORMAT) throw corrupt(key, `has format ${JSON.stringify(m.format)}, expected ${PACKAGE_FORMAT}`);
  if (!isCount(m.rangeId) || !isCount(m.firstFileId) || !isCount(m.lastFileId)) throw corrupt(key, "lacks rangeId/firstFileId/lastFileId");
  const tar = m.tar;
  if (!tar || typeof tar.key !== "string" || typeof tar.uri !== "string" || !isCount(tar.size) || !isSha(tar.sha256)) {
    throw corrupt(key, "has no valid tar {key, uri, size, sha256}");
  }
  if (!Array.isArray(m.members)) throw corrupt(key, "has no members list");
  m.members.forEach((member: Partial<PackageMember>, i) => {
    if (!member || typeof member.path !== "string" || !isCount(member.size) || !isSha(member.sha256) || !isCount(member.fileId)) {
      throw corrupt(key, `member #${i} is not {path, size, sha256, fileId}`);
    }
    try {
      validateKey(member.path);
    } catch (err) {
      throw corrupt(key, `member #${i} has an unusable path: ${(err as Error).message}`, err);
    }
  });
  return m as PackageManifest;
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function isSha(v: unknown): v is string {
  return typeof v === "string" && /^[0-9a-f]{64}$/.test(v);
}

function corrupt(key: string, what: string, cause?: unknown): PermanentError {
  return new PermanentError("archive-corrupt", `manifest ${JSON.stringify(key)} ${what}`, { cause });
}
