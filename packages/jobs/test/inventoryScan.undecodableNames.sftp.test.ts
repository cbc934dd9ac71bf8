import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { SftpStorage } from "@fleet/storage/sftp/sftpStorage";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { scanInventory } from "../src/inventory/scanInventory";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * The SFTP source with names that are not UTF-8 (Latin-1 "café" = 63 61 66 E9). Two different
 * files became one key listed twice (two current rows for one key, both naming a file that does
 * not exist); they are reported with the unreadable entries instead.
 */
describe("SFTP inventory scan of file names that are not UTF-8", () => {
  let h: PipelineHarness;
  let ssh: SshServer;
  let source: SftpStorage;

  beforeAll(async () => {
    [h, ssh] = await Promise.all([createPipelineHarness("inv-names-sftp"), startSshServer()]);
    const root = join(ssh.root, "share");
    await mkdir(join(root, "legacy"), { recursive: true });
    const dirBytes = Buffer.from(join(root, "legacy") + "/");
    await writeFile(Buffer.concat([dirBytes, Buffer.from([0x63, 0x61, 0x66, 0xe9]), Buffer.from(".txt")]), "e-acute");
    await writeFile(Buffer.concat([dirBytes, Buffer.from([0x63, 0x61, 0x66, 0xe8]), Buffer.from(".txt")]), "e-grave");
    source = new SftpStorage(ssh.sftpOptions(root));
  }, 60_000);
  afterAll(async () => {
    await source?.close();
    await Promise.all([h?.close(), ssh?.stop()]);
  });

  it("two Latin-1 names: both reported, no key recorded", async () => {
    const r = await scanInventory({ db: h.runtime.db, source, log: h.log });
    const { rows } = await h.runtime.db.query<{ uri: string }>(`SELECT uri FROM source_files WHERE superseded_by IS NULL ORDER BY id`);
    expect({ files: r.files, rows: rows.length, unreadable: r.unreadable }).toEqual({ files: 0, rows: 0, unreadable: ["legacy/caf\uFFFD.txt", "legacy/caf\uFFFD.txt"] });
  });
});
