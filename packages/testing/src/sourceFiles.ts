import { createHash, randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Queryable } from "@fleet/db/pool";

export interface SeededFile {
  id: number;
  key: string;
  size: number;
  sha256: string;
}

export interface SeedOptions {
  /** How many files. */
  count: number;
  /** Size of file i (default: 1 KiB + i bytes). */
  size?: (i: number) => number;
  /** Key of file i (default: `dir<i % 10>/file-<i>.bin`). */
  key?: (i: number) => string;
  /** Indexes whose inventory row is written but whose file is not (missing source). */
  missing?: ReadonlySet<number>;
}

/** Writes real files under `root` and their source_files rows (one bulk insert). */
export async function seedSourceFiles(db: Queryable, root: string, options: SeedOptions): Promise<SeededFile[]> {
  const sizeOf = options.size ?? ((i: number) => 1_024 + i);
  const keyOf = options.key ?? ((i: number) => `dir${i % 10}/file-${i}.bin`);
  const files: Array<Omit<SeededFile, "id">> = [];
  const dirs = new Set<string>();
  for (let i = 0; i < options.count; i++) {
    const key = keyOf(i);
    const body = randomBytes(sizeOf(i));
    files.push({ key, size: body.length, sha256: createHash("sha256").update(body).digest("hex") });
    if (options.missing?.has(i)) continue;
    const path = join(root, key);
    if (!dirs.has(dirname(path))) {
      await mkdir(dirname(path), { recursive: true });
      dirs.add(dirname(path));
    }
    await writeFile(path, body);
  }
  const { rows } = await db.query<{ id: number }>(
    `INSERT INTO source_files (uri, name, size, owner)
     SELECT k, regexp_replace(k, '^.*/', ''), s, 'test' FROM unnest($1::text[], $2::int8[]) AS t(k, s)
     RETURNING id`,
    [files.map((f) => f.key), files.map((f) => f.size)],
  );
  // Serial ids are handed out in insertion order, which is unnest order.
  const ids = rows.map((r) => Number(r.id)).sort((a, b) => a - b);
  return files.map((f, i) => ({ ...f, id: ids[i]! }));
}
