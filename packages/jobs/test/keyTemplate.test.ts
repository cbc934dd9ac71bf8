import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { parseConfig } from "@fleet/core/config";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { destinationKeyOf, keyTemplate } from "../src/migration/destinationKey";
import { DestinationHasher, destinationOf, migratedFilesPage } from "../src/migration/migratedFiles";
import { writeFile } from "node:fs/promises";
import { migrationFields } from "../src/settings";
import { createPipelineHarness, fileSummary, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("DESTINATION_KEY_TEMPLATE", () => {
  const file = { id: 42, key: "projects/x/report.final.pdf", name: "report.final.pdf", owner: "alice", createdAt: new Date("2024-03-07T23:30:00Z") };

  it("renders every field from the inventory row", () => {
    expect(destinationKeyOf(keyTemplate("{owner}/{year}/{month}/{day}/{path}"), file)).toBe("alice/2024/03/07/projects/x/report.final.pdf");
    expect(destinationKeyOf(keyTemplate("by-id/{id}.{ext}"), file)).toBe("by-id/42.pdf");
    expect(destinationKeyOf(keyTemplate("{dir}/{owner}-{name}"), file)).toBe("projects/x/alice-report.final.pdf");
    // An empty owner leaves no empty folder; {path} alone is the source key, untouched.
    expect(destinationKeyOf(keyTemplate("{owner}/{path}"), { ...file, owner: null })).toBe("projects/x/report.final.pdf");
    expect(destinationKeyOf(keyTemplate("{path}"), file)).toBe(file.key);
  });

  it("refuses a field value that would escape or corrupt the key, as invalid-key", () => {
    expect(() => destinationKeyOf(keyTemplate("{owner}/{path}"), { ...file, owner: ".." })).toThrow(expect.objectContaining({ category: "invalid-key" }));
    expect(() => destinationKeyOf(keyTemplate("{owner}/{path}"), { ...file, owner: "a\u0001b" })).toThrow(expect.objectContaining({ category: "invalid-key" }));
  });

  it("is checked when the config is read: unknown fields, stray braces, templates that would collide", () => {
    const schema = z.object({ DESTINATION_KEY_TEMPLATE: migrationFields.DESTINATION_KEY_TEMPLATE });
    expect(() => parseConfig(schema, { DESTINATION_KEY_TEMPLATE: "{tenant}/{path}" })).toThrow(/DESTINATION_KEY_TEMPLATE: .*uses \{tenant\}, not one of/);
    expect(() => parseConfig(schema, { DESTINATION_KEY_TEMPLATE: "{owner}/{path" })).toThrow(/brace that is not part of a \{field\}/);
    expect(() => parseConfig(schema, { DESTINATION_KEY_TEMPLATE: "{owner}/{year}" })).toThrow(/must contain \{path\}, \{name\} or \{id\}/);
    expect(parseConfig(schema, {}).DESTINATION_KEY_TEMPLATE.isIdentity).toBe(true);
  });
});

describe("a migration with DESTINATION_KEY_TEMPLATE={owner}/{year}/{path}", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("writes each file under its rendered key, fails only the file whose owner is unusable, and verifies", async () => {
    h = await createPipelineHarness("key-template", { BATCH_SIZE: "20", DESTINATION_KEY_TEMPLATE: "{owner}/{year}/{path}" });
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 30 });
    await h.runtime.db.query(`UPDATE source_files SET owner = CASE WHEN id = $1 THEN '..' ELSE 'team-' || (id % 2) END, created_at = '2023-05-01T12:00:00Z'`, [files[5]!.id]);
    await h.startRunner();
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await waitFor(async () => (await fileSummary(h.runtime)).withoutOutcome === 0 || undefined, 30_000, "every file to have an outcome");
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: 29, FAIL: 1, RETRYING: 0, withoutOutcome: 0 });
    const failed = await h.runtime.db.query("SELECT file_id, error_category FROM migration_files WHERE status = 'FAIL'");
    expect(failed.rows).toEqual([{ file_id: files[5]!.id, error_category: "invalid-key" }]);
    for (const [i, f] of files.entries()) {
      if (i === 5) continue;
      expect(sha(await readFile(join(h.destDir, `team-${f.id % 2}`, "2023", f.key)))).toBe(f.sha256);
    }
    const { rows } = await h.runtime.db.query<{ new_uri: string }>("SELECT new_uri FROM migration_files WHERE file_id = $1", [files[0]!.id]);
    expect(rows[0]!.new_uri).toContain(`/team-${files[0]!.id % 2}/2023/`);

    // The shared capabilities a processor (and `fleet migrate verify`) uses: read the migrated
    // files, resolve each destination key through the template, hash it again there.
    const migrated = await migratedFilesPage(h.runtime.db, { afterId: 0, limit: 100 });
    expect(migrated).toHaveLength(29);
    const first = migrated[0]!;
    expect(destinationOf(first, h.runtime.settings.keyTemplate)).toEqual({ kind: "object", key: `team-${first.fileId % 2}/2023/${first.key}` });
    const hasher = new DestinationHasher(h.runtime.deps.destination, h.runtime.settings.keyTemplate);
    for (const f of migrated) expect(await hasher.sha256(f)).toBe(f.sha256);
    const prefix = first.key.slice(0, first.key.lastIndexOf("/") + 1);
    expect((await migratedFilesPage(h.runtime.db, { afterId: 0, limit: 100, prefix })).every((f) => f.key.startsWith(prefix))).toBe(true);
    await writeFile(join(h.destDir, `team-${first.fileId % 2}`, "2023", first.key), "changed behind the fleet's back");
    expect(await hasher.sha256(first)).toBe(sha(Buffer.from("changed behind the fleet's back")));
  });
});

describe("a packaged migration with DESTINATION_KEY_TEMPLATE={owner}/{path}", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("names members by their destination keys, so unpacking restores the templated layout", async () => {
    h = await createPipelineHarness("key-template-packaged", { BATCH_SIZE: "50", TRANSFER_MODE: "packaged", DESTINATION_KEY_TEMPLATE: "{owner}/{path}" });
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 20 });
    await h.runtime.db.query(`UPDATE source_files SET owner = CASE WHEN id = $1 THEN '..' ELSE 'site-a' END`, [files[3]!.id]);
    await h.startRunner();
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await waitFor(async () => (await fileSummary(h.runtime)).withoutOutcome === 0 || undefined, 30_000, "every file to have an outcome");
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: 19, FAIL: 1, RETRYING: 0, withoutOutcome: 0 });
    const manifests: string[] = [];
    for await (const o of h.runtime.deps.destination.list(".fleet-packages/")) if (o.key.endsWith(".manifest.json")) manifests.push(o.key);
    expect(manifests).toHaveLength(1);
    // A packaged file is found and hashed inside its package.
    const migrated = await migratedFilesPage(h.runtime.db, { afterId: 0, limit: 100 });
    expect(destinationOf(migrated[0]!, h.runtime.settings.keyTemplate)).toMatchObject({ kind: "packaged" });
    const hasher = new DestinationHasher(h.runtime.deps.destination, h.runtime.settings.keyTemplate);
    for (const f of migrated) expect(await hasher.sha256(f)).toBe(f.sha256);
    const job = await h.runtime.deps.jobs.enqueue("unpack", { manifest: manifests[0]! });
    await waitFor(async () => (await h.runtime.deps.jobs.queue("migration").getJobState(job.id!)) === "completed" || undefined, 30_000, "the unpack job");
    for (const [i, f] of files.entries()) {
      if (i === 3) continue;
      expect(sha(await readFile(join(h.destDir, "site-a", f.key)))).toBe(f.sha256);
    }
  });
});
