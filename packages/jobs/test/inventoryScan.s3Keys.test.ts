import { S3Storage } from "@fleet/storage/s3/s3Storage";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { scanInventory } from "../src/inventory/scanInventory";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * an S3 source may hold keys that are not valid Fleet keys (a tab, say). The scan
 * lists them (they fail later, one by one, as invalid-key), but when such a key happens to
 * end a batch, it becomes the scan's cursor, and a resumed scan must still go on.
 */
const BUCKET = "inv-keys";

describe("S3 inventory scan resumed after an unusual key", () => {
  let h: PipelineHarness;
  let s3: S3Server;
  let source: S3Storage;

  beforeAll(async () => {
    [h, s3] = await Promise.all([createPipelineHarness("inv-s3keys"), startS3Server()]);
    await s3.createBucket(BUCKET);
    const keys = [...Array.from({ length: 10 }, (_, i) => `k${String(i).padStart(2, "0")}`), "k10\tnotes.txt", ...Array.from({ length: 9 }, (_, i) => `k${i + 11}`)];
    for (const key of keys) await s3.putObject(BUCKET, key, key);
    source = new S3Storage({ bucket: BUCKET, endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
  }, 60_000);
  afterAll(async () => {
    await source?.close();
    await Promise.all([h?.close(), s3?.stop()]);
  });

  const scan = (more: Partial<Parameters<typeof scanInventory>[0]> = {}) => scanInventory({ db: h.runtime.db, source, log: h.log, batchSize: 11, ...more });

  it("a complete scan lists all 20 objects", async () => {
    const listed: string[] = [];
    for await (const o of source.list("")) listed.push(o.key);
    expect(listed).toHaveLength(20);
    expect(listed[10]).toBe("k10\tnotes.txt");
  });

  it("an interrupted scan whose last written key holds a tab resumes and finishes", async () => {
    // The process dies right after the first batch committed (simulated: a throw at that point;
    // a page of 20 keys is listed whole, so an abort signal would arrive too late).
    await expect(
      scan({
        onProgress: (p) => {
          if (p.files >= 11) throw new Error("killed");
        },
      }),
    ).rejects.toThrow("killed");
    const cursor = JSON.parse((await h.runtime.db.query(`SELECT cursor FROM sync_state WHERE key LIKE 'inventory-scan:%'`)).rows[0].cursor as string);
    expect(cursor.after).toBe("k10\tnotes.txt");
    // The next run (the nightly job, or the operator re-running the command) must go on.
    const r = await scan();
    expect(r).toMatchObject({ resumed: true, files: 20 });
    expect((await h.runtime.db.query(`SELECT count(*)::int AS n FROM source_files`)).rows[0].n).toBe(20);
  });
});
