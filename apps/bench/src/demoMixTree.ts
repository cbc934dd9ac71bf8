import { randomBytes } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Queryable } from "@fleet/db/pool";
import { DEMO_POOL_BYTES, demoFile, demoFileBody, prng } from "@fleet/cli/commands/seedDemo";
import type { DemoFile } from "@fleet/cli/commands/seedDemo";
import type { Say } from "./say";
import { elapsedSeconds } from "./say";
import { countFiles } from "./sourceTree";
import type { SourceTree } from "./sourceTree";

/** The demo's seed: the bench's P1b tree is the tree `fleet demo` copies (seedDemo.ts). */
const DEMO_SEED = 42;

/**
 * P1b's tree: `files` files from the demo's own generator (seedDemo's demoFile: 55% of 0.5–4 KiB,
 * 30% of 4–32 KiB, 12% to 128 KiB, 2.8% to 1 MiB, 0.2% to 4 MiB; owner/year folders, a few
 * names with spaces and non-ASCII letters). Created once and reused while its manifest and
 * file count match; its rows carry each file's own size.
 */
export async function prepareDemoMixTree(root: string, files: number, say: Say, discard: (dir: string) => Promise<void>): Promise<SourceTree> {
  const random = prng(DEMO_SEED);
  const specs: DemoFile[] = [];
  for (let seq = 0; seq < files; seq++) specs.push(demoFile(seq, random, DEMO_POOL_BYTES));
  const bytes = specs.reduce((sum, f) => sum + f.size, 0);
  const tree: SourceTree = {
    root,
    files,
    size: Math.round(bytes / files),
    bytes,
    key: (i) => specs[i]!.key,
    insertRows: (db) => insertDemoRows(db, specs),
  };
  const manifestPath = `${root}.json`;
  const wanted = JSON.stringify({ demoMix: true, files, seed: DEMO_SEED, bytes });
  const existing = await readFile(manifestPath, "utf8").catch(() => undefined);
  if (existing?.trim() === wanted && (await countFiles(root)) === files) {
    const started = process.hrtime.bigint();
    await forEach(specs, (f) => readFile(join(root, f.key)).then(() => undefined));
    say(`reusing the demo-mix tree (${files} files, ${(bytes / 1_048_576).toFixed(0)} MiB) under ${root} (read in ${elapsedSeconds(started).toFixed(1)} s to warm the cache)`);
    return tree;
  }
  const started = process.hrtime.bigint();
  await rm(manifestPath, { force: true });
  await discard(root);
  const pool = randomBytes(DEMO_POOL_BYTES);
  const dirs = new Set(specs.map((f) => dirname(join(root, f.key))));
  for (const dir of dirs) await mkdir(dir, { recursive: true });
  await forEach(specs, (f, seq) => writeFile(join(root, f.key), demoFileBody(seq, f, pool)));
  await writeFile(manifestPath, `${wanted}\n`);
  say(`created the demo-mix tree (${files} files, ${(bytes / 1_048_576).toFixed(0)} MiB) under ${root} in ${elapsedSeconds(started).toFixed(1)} s`);
  return tree;
}

async function forEach(specs: DemoFile[], fn: (f: DemoFile, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      for (let i = next++; i < specs.length; i = next++) await fn(specs[i]!, i);
    }),
  );
}

async function insertDemoRows(db: Queryable, specs: DemoFile[]): Promise<void> {
  const CHUNK = 20_000;
  for (let start = 0; start < specs.length; start += CHUNK) {
    const part = specs.slice(start, start + CHUNK);
    await db.query(
      `INSERT INTO source_files (uri, name, size, owner) SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[])`,
      [part.map((f) => f.key), part.map((f) => f.name), part.map((f) => f.size), part.map((f) => f.owner)],
    );
  }
  await db.query("ANALYZE source_files");
}
