import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { SingleBar, Presets } from "cli-progress";
import type { DbPool } from "@fleet/db/pool";

/**
 * Creates N real demo files under a directory with a realistic small-file size mix, plus
 * their source_files rows (the old system's seed_files(n), with files behind the rows).
 */

/** Size classes: most files are small, a few are large (like a home-directory share). */
const SIZE_MIX: ReadonlyArray<{ share: number; min: number; max: number }> = [
  { share: 0.55, min: 512, max: 4_096 },
  { share: 0.3, min: 4_096, max: 32_768 },
  { share: 0.12, min: 32_768, max: 131_072 },
  { share: 0.028, min: 131_072, max: 1_048_576 },
  { share: 0.002, min: 1_048_576, max: 4_194_304 },
];

const EXTENSIONS = ["pdf", "docx", "xlsx", "jpg", "png", "txt", "csv", "eml", "zip", "json"];
const SPECIAL_NAMES = ["Rapport annuel été", "quarterly results (final)", "résumé – copy", "数据 备份", "notes  two spaces"];

export interface SeedDemoOptions {
  files: number;
  dir: string;
  /** Inventory rows whose file is deliberately missing (to show failures). */
  missing?: number;
  seed?: number;
  onProgress?: (done: number) => void;
}

export interface SeedDemoResult {
  files: number;
  bytes: number;
  dir: string;
  firstId: number;
  lastId: number;
}

/** A small deterministic PRNG (mulberry32): the same seed gives the same tree. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pickSize(r: () => number): number {
  let x = r();
  for (const c of SIZE_MIX) {
    if (x < c.share) return Math.floor(c.min + r() * (c.max - c.min));
    x -= c.share;
  }
  return 2_048;
}

export async function seedDemo(db: DbPool, options: SeedDemoOptions): Promise<SeedDemoResult> {
  const root = resolve(options.dir);
  const random = prng(options.seed ?? 42);
  // File bodies are slices of one random pool with a unique header, so every file differs
  // without generating gigabytes of randomness.
  const pool = randomBytes(DEMO_POOL_BYTES);
  const madeDirs = new Set<string>();
  const CHUNK = 2_000;
  let bytes = 0, firstId = 0, lastId = 0, done = 0;
  const missing = options.missing ?? 0;
  for (let start = 0; start < options.files + missing; start += CHUNK) {
    const n = Math.min(CHUNK, options.files + missing - start);
    const keys: string[] = [], names: string[] = [], sizes: number[] = [], owners: string[] = [];
    const writes: Promise<void>[] = [];
    for (let i = 0; i < n; i++) {
      const seq = start + i;
      const file = demoFile(seq, random, pool.length);
      keys.push(file.key);
      names.push(file.name);
      sizes.push(file.size);
      owners.push(file.owner);
      if (seq >= options.files) continue; // deliberately missing on disk
      const body = demoFileBody(seq, file, pool);
      bytes += file.size;
      const path = join(root, file.key);
      writes.push(ensureDir(dirname(path), madeDirs).then(() => writeFile(path, body)));
    }
    await Promise.all(writes);
    const { rows } = await db.query<{ first: number; last: number }>(
      `WITH ins AS (
         INSERT INTO source_files (uri, name, size, owner)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[]) RETURNING id
       ) SELECT min(id) AS first, max(id) AS last FROM ins`,
      [keys, names, sizes, owners],
    );
    if (!firstId) firstId = rows[0]!.first;
    lastId = rows[0]!.last;
    done += n;
    options.onProgress?.(done);
  }
  return { files: options.files, bytes, dir: root, firstId, lastId };
}

/** One demo file: where it goes and how big it is (`offset`: where its body starts in the pool). */
export interface DemoFile {
  key: string;
  name: string;
  size: number;
  owner: string;
  offset: number;
}

/**
 * File number `seq` of the demo tree, drawing from `random` in a fixed order (so a seed gives
 * the same tree); `poolBytes` is the length of the random pool bodies are cut from. The bench
 * (P1b) builds its demo-mix tree with this too, so both measure the same files.
 */
export function demoFile(seq: number, random: () => number, poolBytes: number): DemoFile {
  const owner = `user${String(Math.floor(random() * 40)).padStart(2, "0")}`;
  const year = 2015 + Math.floor(random() * 10);
  const ext = EXTENSIONS[Math.floor(random() * EXTENSIONS.length)]!;
  // A few names with spaces and non-ASCII letters, as real shares have.
  const name = seq % 997 === 0 ? `${SPECIAL_NAMES[seq % SPECIAL_NAMES.length]} ${seq}.${ext}` : `file-${String(seq).padStart(7, "0")}.${ext}`;
  const size = pickSize(random);
  const offset = Math.floor(random() * (poolBytes - size));
  return { key: `${owner}/${year}/${name}`, name, size, owner, offset };
}

/** The body of a demo file: a unique header, then a slice of the pool, `size` bytes in all. */
export function demoFileBody(seq: number, file: DemoFile, pool: Buffer): Buffer {
  const header = Buffer.from(`fleet demo file ${seq}\n`);
  return Buffer.concat([header, pool.subarray(file.offset, file.offset + Math.max(0, file.size - header.length))]).subarray(0, file.size);
}

/** The demo's pool of random bytes file bodies are cut from. */
export const DEMO_POOL_BYTES = 4 * 1_048_576 + 1;

async function ensureDir(dir: string, made: Set<string>): Promise<void> {
  if (made.has(dir)) return;
  await mkdir(dir, { recursive: true });
  made.add(dir);
}

/** A progress bar on stderr when it is a terminal; silent otherwise. */
export function progressBar(label: string, total: number): { update(n: number): void; stop(): void } {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new SingleBar({ format: `${label} [{bar}] {percentage}% | {value}/{total} | {eta_formatted} left`, stream: process.stderr, hideCursor: true }, Presets.shades_classic);
  bar.start(total, 0);
  return { update: (n) => bar.update(n), stop: () => bar.stop() };
}
