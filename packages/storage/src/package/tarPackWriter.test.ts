import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { pack } from "tar-stream";
import { readTarEntries } from "./tarEntries";
import { MemberSourceError, TarPackWriter } from "./tarPackWriter";

const run = promisify(execFile);

// Names ustar holds as they are, with a prefix split, or only through a PAX header; sizes
// around the 512-byte block (padding or none) and the empty file.
const MEMBERS: Array<{ path: string; bytes: Buffer }> = [
  { path: "plain.txt", bytes: Buffer.from("hello\n") },
  { path: "empty file.bin", bytes: Buffer.alloc(0) },
  { path: "dir with spaces/exactly 512.bin", bytes: bytesOf(512, 1) },
  { path: "dir/511.bin", bytes: bytesOf(511, 2) },
  { path: "dir/513.bin", bytes: bytesOf(513, 3) },
  { path: `${"a".repeat(100)}`, bytes: bytesOf(10, 4) }, // exactly 100 bytes: no prefix
  { path: `${"long-folder-".repeat(8)}/${"b".repeat(60)}/${"c".repeat(90)}.txt`, bytes: bytesOf(700, 5) }, // prefix split
  { path: `${"d".repeat(120)}.txt`, bytes: bytesOf(100, 6) }, // one segment > 100 bytes: PAX
  { path: `${"e".repeat(160)}/${"f".repeat(20)}`, bytes: bytesOf(1, 7) }, // prefix would pass 155 bytes: PAX
  { path: "ünïcødé/日本語 ファイル.txt", bytes: bytesOf(4096, 8) }, // non-ASCII: PAX
  { path: `${"é".repeat(60)}/x`, bytes: bytesOf(2048, 9) }, // 122 bytes of UTF-8 in 62 chars
  { path: "large/300k.bin", bytes: bytesOf(300 * 1024 + 7, 10) }, // larger than one output chunk
];

describe("TarPackWriter", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "fleet-tarpack-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("writes the same bytes tar-stream's pack wrote for the same members (re-runs stay unchanged)", async () => {
    const ours = await packed((w) => {
      for (const m of MEMBERS) w.addBuffer(m.path, m.bytes);
    });
    const theirs = await tarStreamPacked(MEMBERS);
    expect(ours.bytes.length).toBe(theirs.length);
    expect(sha256(ours.bytes)).toBe(sha256(theirs));
    expect(ours.digest).toEqual({ size: theirs.length, sha256: sha256(theirs) });
  });

  it("is read back identically by tar-stream's extract and by GNU tar, buffered and streamed members alike", async () => {
    const { bytes } = await packed(async (w) => {
      for (const [i, m] of MEMBERS.entries()) {
        if (i % 2 === 0) {
          w.addBuffer(m.path, m.bytes);
        } else {
          // Odd members streamed in uneven pieces (some passed through, some copied).
          const digest = await w.addStream(m.path, m.bytes.length, Readable.from(pieces(m.bytes)));
          expect(digest).toEqual({ size: m.bytes.length, sha256: sha256(m.bytes) });
        }
      }
    });

    const reader = readTarEntries(Readable.from([bytes]), "test.tar");
    const seen: Array<{ path: string; bytes: Buffer }> = [];
    for await (const entry of reader.entries) {
      const parts: Buffer[] = [];
      for await (const part of entry.body) parts.push(part);
      expect(entry.header.type).toBe("file");
      seen.push({ path: entry.header.name, bytes: Buffer.concat(parts) });
    }
    expect(seen.map((m) => m.path)).toEqual(MEMBERS.map((m) => m.path));
    seen.forEach((m, i) => expect(m.bytes.equals(MEMBERS[i]!.bytes)).toBe(true));

    const tarFile = join(dir, "members.tar");
    await writeFile(tarFile, bytes);
    const listing = await run("tar", ["-tvf", tarFile], { env: { ...process.env, LC_ALL: "C.UTF-8" } });
    expect(listing.stderr).toBe("");
    const out = join(dir, "out");
    await run("mkdir", ["-p", out]);
    await run("tar", ["-xf", tarFile, "-C", out], { env: { ...process.env, LC_ALL: "C.UTF-8" } });
    for (const m of MEMBERS) {
      expect(sha256(await readFile(join(out, m.path)))).toBe(sha256(m.bytes));
    }
    const names = await run("tar", ["-tf", tarFile], { env: { ...process.env, LC_ALL: "C.UTF-8" } });
    expect(names.stdout.trimEnd().split("\n")).toEqual(MEMBERS.map((m) => m.path));
  });

  it("fails a streamed member whose source delivers another byte count, and refuses members once abandoned", async () => {
    const w = new TarPackWriter("bad.tar");
    const consumed = drain(w.body).catch((err: unknown) => err);
    w.addBuffer("ok.txt", Buffer.from("fine"));
    await expect(w.addStream("short.bin", 10, Readable.from([Buffer.alloc(4)]))).rejects.toThrow(MemberSourceError);
    await expect(w.addStream("long.bin", 2, Readable.from([Buffer.alloc(4)]))).rejects.toMatchObject({ cause: expect.objectContaining({ category: "source-changed" }) });
    w.destroy(new Error("destination failed"));
    expect(() => w.addBuffer("late.txt", Buffer.from("x"))).toThrow(/abandoned/);
    await expect(w.drained()).rejects.toThrow(/abandoned/);
    expect(await consumed).toEqual(expect.objectContaining({ message: "destination failed" }));
  });

  it("holds back while the destination is behind, and goes on when it reads", async () => {
    const w = new TarPackWriter("slow.tar");
    const body = bytesOf(4096, 11);
    let added = 0;
    while (w.addBuffer(`f${added}`, body)) added++;
    // Stopped near the 1 MiB buffer, not after every member.
    expect(added).toBeGreaterThan(200);
    let resumed = false;
    const waiting = w.drained().then(() => (resumed = true));
    await new Promise((r) => setImmediate(r));
    expect(resumed).toBe(false);
    const consumed = drain(w.body);
    await waiting;
    w.finish();
    const bytes = await consumed;
    expect(bytes.length).toBe((added + 1) * (512 + 4096) + 1024);
  });
});

async function packed(add: (w: TarPackWriter) => void | Promise<void>): Promise<{ bytes: Buffer; digest: { size: number; sha256: string } }> {
  const w = new TarPackWriter("test.tar");
  const consumed = drain(w.body);
  await add(w);
  w.finish();
  const bytes = await consumed;
  return { bytes, digest: w.digest() };
}

async function drain(body: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of body) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

/** The previous writer's output: tar-stream's pack with the same header fields. */
async function tarStreamPacked(members: Array<{ path: string; bytes: Buffer }>): Promise<Buffer> {
  const p = pack();
  const consumed = drain(Readable.from(p));
  for (const m of members) {
    await new Promise<void>((resolve, reject) =>
      p.entry({ name: m.path, size: m.bytes.length, mode: 0o644, mtime: new Date(0), type: "file" }, m.bytes, (err) => (err ? reject(err) : resolve())),
    );
  }
  p.finalize();
  return consumed;
}

function* pieces(bytes: Buffer): Generator<Buffer> {
  const sizes = [1, 700, 100 * 1024, 3];
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield bytes.subarray(at, at + n);
    at += n;
  }
}

function bytesOf(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
}

function sha256(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}
