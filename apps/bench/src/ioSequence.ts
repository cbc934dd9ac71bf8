/**
 * The bench's `io` measurement, run as a child process: the system calls Fleet makes per small
 * file on a local → local copy with VERIFY=readback (LocalStorage: open O_NOFOLLOW, the
 * /proc/self/fd confinement check, fstat, read, fstat, close; sha256; temp file opened wx+,
 * its confinement check, write, fsync, read back through the descriptor, sha256, close, link,
 * unlink) — and nothing else: no database, no queue, no pipeline. Made asynchronously
 * through libuv's thread pool, `concurrency` files at a time (as Fleet does); synchronously,
 * one file after another; or synchronously on `concurrency` worker threads, each its share of
 * the files (fsyncs in flight at once, no thread-pool round trips). Its files/s and CPU per
 * file are the floor of what Fleet's way of copying can cost in Node on this machine, to set
 * beside cp -r, rclone and Fleet itself; the threads variant with fsync is the most that one
 * fsync per file allows on this disk.
 *
 * Usage: node ioSequence.js <source dir> <destination dir> <async|sync|threads> <fsync 0|1> [concurrency]
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import { join, relative } from "node:path";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

const READ_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

const call = <T>(start: (done: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> =>
  new Promise((resolve, reject) => start((err, value) => (err ? reject(err) : resolve(value))));

const confine = (fd: number): string => fs.readlinkSync(`/proc/self/fd/${fd}`);
const sha256 = (bytes: Buffer): string => createHash("sha256").update(bytes).digest("hex");

interface Paths {
  from: string;
  to: string;
  temp: string;
}

async function copyAsync({ from, to, temp }: Paths, fsync: boolean): Promise<void> {
  const fd = await call<number>((done) => fs.open(from, READ_FLAGS, done));
  confine(fd);
  const before = await call<fs.Stats>((done) => fs.fstat(fd, done));
  const body = Buffer.allocUnsafe(before.size);
  await call<number>((done) => fs.read(fd, body, 0, before.size, 0, done));
  await call<fs.Stats>((done) => fs.fstat(fd, done));
  await call<void>((done) => fs.close(fd, (err) => done(err, undefined)));
  const digest = sha256(body);
  const out = await call<number>((done) => fs.open(temp, "wx+", done));
  confine(out);
  await call<number>((done) => fs.write(out, body, 0, body.length, null, done));
  if (fsync) await call<void>((done) => fs.fsync(out, (err) => done(err, undefined)));
  const back = Buffer.allocUnsafe(body.length);
  await call<number>((done) => fs.read(out, back, 0, back.length, 0, done));
  if (sha256(back) !== digest) throw new Error(`${to}: read back other bytes`);
  await call<void>((done) => fs.close(out, (err) => done(err, undefined)));
  await call<void>((done) => fs.link(temp, to, (err) => done(err, undefined)));
  await call<void>((done) => fs.unlink(temp, (err) => done(err, undefined)));
}

function copySync({ from, to, temp }: Paths, fsync: boolean): void {
  const fd = fs.openSync(from, READ_FLAGS);
  confine(fd);
  const before = fs.fstatSync(fd);
  const body = Buffer.allocUnsafe(before.size);
  fs.readSync(fd, body, 0, before.size, 0);
  fs.fstatSync(fd);
  fs.closeSync(fd);
  const digest = sha256(body);
  const out = fs.openSync(temp, "wx+");
  confine(out);
  fs.writeSync(out, body, 0, body.length, null);
  if (fsync) fs.fsyncSync(out);
  const back = Buffer.allocUnsafe(body.length);
  fs.readSync(out, back, 0, back.length, 0);
  if (sha256(back) !== digest) throw new Error(`${to}: read back other bytes`);
  fs.closeSync(out);
  fs.linkSync(temp, to);
  fs.unlinkSync(temp);
}

/** The threads variant: `threads` worker threads copy their shares synchronously. */
function copyOnThreads(files: Paths[], fsync: boolean, threads: number): Promise<void> {
  const shares = Array.from({ length: threads }, (_, t) => files.filter((_f, i) => i % threads === t));
  return Promise.all(
    shares.map(
      (share) =>
        new Promise<void>((resolve, reject) => {
          const worker = new Worker(__filename, { workerData: { share, fsync } });
          worker.once("message", (err: string | null) => (err ? reject(new Error(err)) : resolve()));
          worker.once("error", reject);
        }),
    ),
  ).then(() => undefined);
}

async function main(): Promise<void> {
  const [source, destination, mode, fsyncArg, concurrencyArg] = process.argv.slice(2);
  if (!source || !destination || (mode !== "async" && mode !== "sync" && mode !== "threads")) {
    throw new Error("usage: ioSequence <source dir> <destination dir> <async|sync|threads> <fsync 0|1> [concurrency]");
  }
  const fsync = fsyncArg === "1";
  const concurrency = Number(concurrencyArg ?? 64);
  const files: Paths[] = [];
  for (const entry of fs.readdirSync(source, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const rel = relative(source, join(entry.parentPath, entry.name));
    const to = join(destination, rel);
    files.push({ from: join(source, rel), to, temp: join(destination, `${rel}.io-tmp`) });
  }
  // Folders first, as any copier makes them once per folder.
  for (const dir of new Set(files.map((f) => join(f.to, "..")))) fs.mkdirSync(dir, { recursive: true });
  if (mode === "sync") {
    for (const f of files) copySync(f, fsync);
  } else if (mode === "threads") {
    await copyOnThreads(files, fsync, concurrency);
  } else {
    let next = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < files.length) await copyAsync(files[next++]!, fsync);
      }),
    );
  }
  process.stdout.write(`${files.length}\n`);
}

if (isMainThread) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(1);
  });
} else {
  const { share, fsync } = workerData as { share: Paths[]; fsync: boolean };
  try {
    for (const f of share) copySync(f, fsync);
    parentPort!.postMessage(null);
  } catch (err) {
    parentPort!.postMessage((err as Error).message);
  }
}
