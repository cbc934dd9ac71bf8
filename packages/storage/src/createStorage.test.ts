import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { pathToFileURL } from "node:url";
import { PermanentError } from "@fleet/core/errors";
import { createStorage } from "./createStorage";
import { NullStorage } from "./null/nullStorage";
import { S3Storage } from "./s3/s3Storage";
import { SftpStorage } from "./sftp/sftpStorage";

const sha256 = (data: string): string => createHash("sha256").update(data).digest("hex");

function badConfig(url: string): PermanentError {
  try {
    createStorage(url);
  } catch (err) {
    expect(err).toBeInstanceOf(PermanentError);
    expect((err as PermanentError).category).toBe("bad-config");
    return err as PermanentError;
  }
  throw new Error(`expected ${url} to be refused`);
}

describe("createStorage", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "fleet-create-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("makes a local storage from a plain path or a file URL", async () => {
    const fromPath = createStorage(dir);
    expect(fromPath.kind).toBe("local");
    expect(fromPath.label).toBe(`local:${dir}`);
    await fromPath.write("x y.txt", Buffer.from("x"));
    const fromUrl = createStorage(pathToFileURL(dir).href);
    expect(fromUrl.uri("x y.txt")).toBe(fromPath.uri("x y.txt"));
    expect(await fromUrl.readBuffer("x y.txt")).toEqual(Buffer.from("x"));
  });

  it("resolves a relative path, even one with a colon in it", () => {
    expect(createStorage("backup:2024").label).toBe(`local:${path.resolve("backup:2024")}`);
  });

  it("makes a null storage from null:", () => {
    expect(createStorage("null:")).toBeInstanceOf(NullStorage);
    expect(createStorage("null://")).toBeInstanceOf(NullStorage);
  });

  it("makes S3 and SFTP adapters from their URLs, with the connection's settings", async () => {
    const s3 = createStorage("s3://bucket/prefix?endpoint=http%3A%2F%2F127.0.0.1%3A9&region=eu-west-1", {
      s3: { credentials: { accessKeyId: "AKIAEXAMPLE", secretAccessKey: "s3cr3t" } },
    });
    expect(s3).toBeInstanceOf(S3Storage);
    expect([s3.kind, s3.label, s3.uri("a b.txt")]).toEqual(["s3", "s3://bucket/prefix/", "s3://bucket/prefix/a%20b.txt"]);
    await s3.close();
    const sftp = createStorage("sftp://me@nas.example:2222/export", { ssh: { password: "pw", hostKey: { fingerprint: "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" } } });
    expect(sftp).toBeInstanceOf(SftpStorage);
    expect([sftp.kind, sftp.label]).toEqual(["sftp", "sftp://me@nas.example:2222/export"]);
    await sftp.close();
  });

  it("refuses what it cannot use, saying what to fix and never echoing credentials", () => {
    expect(badConfig("ftp://host/data").message).toMatch(/scheme ftp is not supported \(supported: .*s3:\/\/.*sftp:\/\//);
    const sftp = badConfig("sftp://user:hunter2@host/data");
    expect(sftp.message).toContain("must not contain a password");
    expect(sftp.message).not.toContain("hunter2");
    // No host key: refused at construction, never "accept any key".
    expect(badConfig("sftp://user@host/data").message).toMatch(/configure a private key or a password|no host key configured/);
    expect(badConfig("s3://AKIA:secret@bucket").message).not.toContain("secret@");
    badConfig("file://otherhost/data");
    badConfig("  ");
  });
});

describe("NullStorage", () => {
  const storage = new NullStorage();

  it("hashes and counts what it is given and keeps nothing", async () => {
    expect(await storage.write("a/b.txt", Buffer.from("abc"))).toEqual({
      key: "a/b.txt",
      uri: "null:a/b.txt",
      size: 3,
      sha256: sha256("abc"),
      unchanged: false,
    });
    const streamed = await storage.write("c d\n.txt", Readable.from([Buffer.from("ab"), Buffer.from("c")]));
    expect(streamed).toMatchObject({ size: 3, sha256: sha256("abc"), uri: "null:c%20d%0A.txt" });
    expect(await storage.exists("a/b.txt")).toBeNull();
    await expect(storage.readBuffer("a/b.txt")).rejects.toMatchObject({ category: "not-found" });
    await expect(storage.stat("a/b.txt")).rejects.toMatchObject({ category: "not-found" });
    await expect(storage.createReadStream("a/b.txt")).rejects.toMatchObject({ category: "not-found" });
    const listed: unknown[] = [];
    for await (const info of storage.list()) listed.push(info);
    expect(listed).toEqual([]);
  });

  it("applies the same checks as a real destination", async () => {
    await expect(storage.write("../x", Buffer.from("x"))).rejects.toMatchObject({ category: "invalid-key" });
    await expect(storage.write("x", Buffer.from("x"), { expectedSha256: sha256("y") })).rejects.toMatchObject({
      category: "checksum-mismatch",
    });
    await expect(storage.write("x", Readable.from([Buffer.from("xx")]), { expectedSize: 1 })).rejects.toMatchObject({
      category: "size-mismatch",
    });
    await expect(storage.write("x", Buffer.from("x"), { signal: AbortSignal.abort() })).rejects.toMatchObject({
      category: "interrupted",
    });
  });
});
