import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { LocalStorage } from "@fleet/storage/local/localStorage";
import { copyFile } from "./copyFile";
import { destinationKeyOf, keyTemplate } from "./destinationKey";
import { z } from "zod";
import { parseConfig } from "@fleet/core/config";
import { migrationFields, toMigrationSettings } from "../settings";

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");
const signal = new AbortController().signal;

describe("destination keys that would escape the root or break the filesystem", () => {
  const file = { id: 7, key: "a/b.txt", name: "b.txt", owner: "alice", createdAt: new Date("2024-01-02T00:00:00Z") };
  it("are invalid-key (permanent), never rendered outside the root", () => {
    for (const owner of ["..", "../..", "x/../y", "a\u0000b", "a\u0007", "C:"]) {
      expect(() => destinationKeyOf(keyTemplate("{owner}/{path}"), { ...file, owner })).toThrow(expect.objectContaining({ category: "invalid-key", retryable: false }));
    }
    // An absolute-looking owner stays inside (its empty segments vanish).
    expect(destinationKeyOf(keyTemplate("{owner}/{path}"), { ...file, owner: "/etc" })).toBe("etc/a/b.txt");
    expect(() => destinationKeyOf(keyTemplate("{owner}/{path}"), { ...file, owner: "x".repeat(256) })).toThrow(expect.objectContaining({ category: "invalid-key" }));
    expect(destinationKeyOf(keyTemplate("{owner}/{path}"), { ...file, owner: "x".repeat(255) })).toBe(`${"x".repeat(255)}/a/b.txt`);
  });
});

describe("a template that can give two files one key ({owner}/{name})", () => {
  let srcRoot: string;
  let dstRoot: string;
  beforeEach(async () => {
    srcRoot = await mkdtemp(path.join(os.tmpdir(), "key-src-"));
    dstRoot = await mkdtemp(path.join(os.tmpdir(), "key-dst-"));
  });
  afterEach(async () => {
    await rm(srcRoot, { recursive: true, force: true });
    await rm(dstRoot, { recursive: true, force: true });
  });

  it("is refused with IF_EXISTS=overwrite (both files would be recorded SUCCESS, one replaced by the other)", () => {
    const schema = z.object(migrationFields);
    for (const template of ["{owner}/{name}", "{year}/{name}", "{ext}/{name}"]) {
      const config = parseConfig(schema, { IF_EXISTS: "overwrite", DESTINATION_KEY_TEMPLATE: template });
      expect(() => toMigrationSettings(config)).toThrow(expect.objectContaining({ category: "bad-config", message: expect.stringContaining("can give two files one key") }));
      expect(toMigrationSettings(parseConfig(schema, { IF_EXISTS: "fail", DESTINATION_KEY_TEMPLATE: template })).keyTemplate.template).toBe(template);
    }
    // Unique: {path}, {id}, or {dir} with {name}.
    for (const template of ["{owner}/{path}", "{owner}/{id}-{name}", "{owner}/{dir}/{name}"]) {
      expect(toMigrationSettings(parseConfig(schema, { IF_EXISTS: "overwrite", DESTINATION_KEY_TEMPLATE: template })).keyTemplate.unique).toBe(true);
    }
  });

  it("with IF_EXISTS=fail, fails the second file as destination-exists and keeps the first one's bytes", async () => {
    const source = new LocalStorage({ root: srcRoot });
    const destination = new LocalStorage({ root: dstRoot });
    await mkdir(path.join(srcRoot, "2023"));
    await mkdir(path.join(srcRoot, "2024"));
    await writeFile(path.join(srcRoot, "2023/report.pdf"), "report of 2023");
    await writeFile(path.join(srcRoot, "2024/report.pdf"), "report of 2024");
    const settings = { smallFileBytes: 1 << 20, verify: "readback" as const, ifExists: "fail" as const, keyTemplate: keyTemplate("{owner}/{name}") };
    const first = await copyFile(source, destination, { fileId: 1, key: "2023/report.pdf", name: "report.pdf", size: 14, owner: "alice" }, settings, signal);
    const second = await copyFile(source, destination, { fileId: 2, key: "2024/report.pdf", name: "report.pdf", size: 14, owner: "alice" }, settings, signal);
    expect(first).toMatchObject({ ok: true, sha256: sha("report of 2023") });
    expect(second).toMatchObject({ ok: false, error: { category: "destination-exists", retryable: false } });
    expect(await readFile(path.join(dstRoot, "alice/report.pdf"), "utf8")).toBe("report of 2023");
    await source.close();
    await destination.close();
  });
});
