import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { paddedSize } from "./tarHeaders";
import { TarPackWriter } from "./tarPackWriter";

// Members of 2 GiB and more (PACKAGE_MAX_BYTES lets "a larger file get a package of
// its own", and ustar/base-256 sizes go far past 2 GiB). paddedSize used to round with 32-bit
// bitwise operators, so from 2 GiB − 511 bytes on the padding it computed was negative.

const GiB = 2 ** 30;

describe("tar padding of large members", () => {
  it.each([
    [2 * GiB - 512, 2 * GiB - 512],
    [2 * GiB - 511, 2 * GiB],
    [2 * GiB, 2 * GiB],
    [2 * GiB + 100, 2 * GiB + 512],
    [3 * GiB, 3 * GiB],
    [4 * GiB, 4 * GiB],
    [5 * GiB + 100, 5 * GiB + 512],
    [8 * GiB - 1, 8 * GiB], // the largest size ustar's octal field holds
    [9 * GiB + 1, 9 * GiB + 512], // base-256 size
  ])("paddedSize(%d) is %d (the next 512-byte boundary)", (size, padded) => {
    expect(paddedSize(size)).toBe(padded);
  });

  it("packs a streamed member just over 2 GiB into a complete tar", async () => {
    const size = 2 * GiB + 100;
    const w = new TarPackWriter("big.tar");
    // Count the tar's bytes and keep only its last 2 KiB (never the tar).
    let total = 0;
    let tail = Buffer.alloc(0);
    const consumed = (async () => {
      for await (const part of w.body) {
        const b = part as Buffer;
        total += b.length;
        tail = Buffer.concat([tail, b.subarray(Math.max(0, b.length - 2048))]).subarray(-2048);
      }
    })();
    const zeros = Buffer.alloc(1024 * 1024);
    async function* source(): AsyncGenerator<Buffer> {
      let left = size;
      while (left > 0) {
        const n = Math.min(left, zeros.length);
        yield zeros.subarray(0, n);
        left -= n;
      }
    }
    const digest = await w.addStream("big/member.bin", size, source());
    expect(digest.size).toBe(size);
    expect(() => w.finish()).not.toThrow();
    await consumed;
    // header + body padded to 512 + two zero blocks
    expect(total).toBe(512 + (2 * GiB + 512) + 1024);
    expect(w.digest().size).toBe(total);
    expect(tail.equals(Buffer.alloc(2048))).toBe(true);
    expect(createHash("sha256").update(tail).digest("hex")).toHaveLength(64);
  }, 120_000);
});
