import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { PermanentError } from "@fleet/core/errors";
import { createStorage } from "../createStorage";
import { NullStorage } from "./nullStorage";

const sha256 = (data: Buffer): string => createHash("sha256").update(data).digest("hex");

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe("NullStorage", () => {
  it("null: has nothing to read", async () => {
    const storage = createStorage("null:");
    for (const read of [() => storage.readBuffer("a/b"), () => storage.createReadStream("a/b"), () => storage.stat("a/b")]) {
      await expect(read()).rejects.toMatchObject({ category: "not-found" });
    }
    expect(await storage.exists("a/b")).toBeNull();
  });

  it("null:zero?size=N reads every key as N zero bytes and still discards writes", async () => {
    const storage = createStorage("null:zero?size=100000");
    expect(storage).toBeInstanceOf(NullStorage);
    expect(storage.label).toBe("null:zero?size=100000");
    const zeros = Buffer.alloc(100_000);
    expect(await storage.readBuffer("a/b.bin")).toEqual(zeros);
    expect(await readAll(await storage.createReadStream("a/b.bin"))).toEqual(zeros);
    expect(await storage.stat("a/b.bin")).toEqual({ key: "a/b.bin", size: 100_000 });
    expect(await storage.exists("a/b.bin")).toEqual({ size: 100_000, sha256: sha256(zeros) });

    // Written bytes are hashed and checked, then dropped: the key still reads as zeros.
    const written = await storage.write("a/b.bin", Buffer.from("abc"), { expectedSize: 3 });
    expect(written).toMatchObject({ size: 3, sha256: sha256(Buffer.from("abc")), unchanged: false, uri: "null:a/b.bin" });
    expect(await storage.exists("a/b.bin")).toEqual({ size: 100_000, sha256: sha256(zeros) });
  });

  it("null:zero without a size reads empty objects", async () => {
    const storage = createStorage("null:zero");
    expect(await storage.readBuffer("x")).toEqual(Buffer.alloc(0));
    expect(await readAll(await storage.createReadStream("x"))).toEqual(Buffer.alloc(0));
  });

  it("still validates keys and honours an aborted signal in zero mode", async () => {
    const storage = createStorage("null:zero?size=1");
    await expect(storage.readBuffer("../escape")).rejects.toBeInstanceOf(PermanentError);
    const aborted = AbortSignal.abort();
    await expect(storage.readBuffer("ok", { signal: aborted })).rejects.toMatchObject({ category: "interrupted" });
  });

  it("leaves URLs that merely start like null:zero to their usual meaning", () => {
    expect(createStorage("null:zeros").kind).toBe("local");
    expect(() => createStorage("null:zero?size=-1")).not.toThrow();
    expect(createStorage("null:zero?size=-1").kind).toBe("local");
  });
});
