import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { databaseFields, parseConfig, redisFields } from "@fleet/core/config";
import { ConfigError, RETRYABLE_CATEGORIES } from "@fleet/core/errors";
import { LinkBreakers, breakerViews } from "@fleet/core/linkBreakers";
import type { BreakerView } from "@fleet/core/linkBreakers";
import { createLogger } from "@fleet/core/logger";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createFleetRuntime } from "../src/runtime/fleetRuntime";
import { migrationFields } from "../src/settings";
import { storageFields } from "../src/storageSettings";
import { createPipelineHarness, fileSummary, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * The pipeline configured the way an operator configures it (URLs plus per-role settings),
 * against a real S3-compatible server and a real OpenSSH server on loopback.
 */

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function migrateAll(h: PipelineHarness): Promise<void> {
  await h.startRunner();
  await h.runtime.deps.jobs.enqueue("seed-ranges", {});
  await waitFor(async () => {
    const s = await fileSummary(h.runtime);
    return s.withoutOutcome === 0 && s;
  }, 60_000, "every file to have an outcome");
}

let s3: S3Server;
let ssh: SshServer;
let secrets: string;
let keyFile: string;
let knownHostsFile: string;

beforeAll(async () => {
  [s3, ssh] = await Promise.all([startS3Server(), startSshServer()]);
  secrets = await mkdtemp(join(tmpdir(), "fleet-remote-secrets-"));
  keyFile = join(secrets, "id_ed25519");
  knownHostsFile = join(secrets, "known_hosts");
  await writeFile(keyFile, ssh.privateKey, { mode: 0o600 });
  await writeFile(knownHostsFile, `${ssh.knownHostsLine}\n`);
});

afterAll(async () => {
  await Promise.all([s3?.stop(), ssh?.stop()]);
  if (secrets) await rm(secrets, { recursive: true, force: true });
});

describe("local → S3, configured by URL and DESTINATION_S3_* variables", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("migrates every file into the bucket under the URL's folder, read back and verified", async () => {
    await s3.createBucket("archive");
    h = await createPipelineHarness("to-s3", {
      BATCH_SIZE: "30",
      VERIFY: "readback",
      DESTINATION_URL: `s3://archive/from-disk?endpoint=${encodeURIComponent(s3.endpoint)}&region=${s3.region}`,
      DESTINATION_S3_ACCESS_KEY_ID: s3.accessKeyId,
      DESTINATION_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
    });
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, {
      count: 75,
      key: (i) => (i === 4 ? "odd names/été & spaces.txt" : `d${i % 3}/f-${i}.bin`),
    });
    await migrateAll(h);
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: 75, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });

    const { rows } = await h.runtime.db.query<{ file_id: number; new_uri: string; sha256: string }>(
      "SELECT file_id, new_uri, sha256 FROM migration_files ORDER BY file_id",
    );
    expect(rows[0]!.new_uri).toMatch(/^s3:\/\/archive\/from-disk\//);
    // Read through the runtime's own destination adapter: the bytes in the bucket, not the rows.
    for (const f of files) {
      const body = await h.runtime.deps.destination.readBuffer(f.key);
      expect(sha(body)).toBe(f.sha256);
      expect(rows.find((r) => r.file_id === f.id)!.sha256).toBe(f.sha256);
    }
  });
});

describe("local → S3 when the S3 server hangs mid-run", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("opens the link's breaker (work paused, nothing failed for good), closes it once the server answers, and ends with every file in the bucket once", async () => {
    await s3.createBucket("outage");
    h = await createPipelineHarness("s3-outage", {
      BATCH_SIZE: "100",
      COPY_CONCURRENCY: "8",
      BREAKER_THRESHOLD: "5",
      BREAKER_PROBE_SCHEDULE: "500ms,1s",
      VERIFY: "write",
      DESTINATION_URL: `s3://outage?endpoint=${encodeURIComponent(s3.endpoint)}&region=${s3.region}`,
      DESTINATION_S3_ACCESS_KEY_ID: s3.accessKeyId,
      DESTINATION_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
      S3_REQUEST_TIMEOUT: "1s",
      // s3rver keeps the body of a PUT whose client gave up (AWS and MinIO never store an
      // aborted PUT), so a timed-out upload leaves a torn object that the retry would rightly
      // refuse as destination-exists. The bucket is Fleet's alone here: overwrite.
      IF_EXISTS: "overwrite",
    });
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 400, size: (i) => 32_768 + i });
    await h.startRunner();
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await waitFor(async () => (await fileSummary(h.runtime)).SUCCESS >= 50 || undefined, 30_000, "some files to be migrated");
    // A hung server (SIGSTOP; killing s3rver instead can corrupt its store for the keys being
    // written, which AWS or MinIO would not — the adapter's kill-mid-upload test covers a crash):
    // requests in flight time out (a link fault), a burst of them opens the link's breaker.
    const breakers = new LinkBreakers(h.runtime.redis, h.runtime.prefix);
    s3.pause();
    let seenOpen: BreakerView | undefined;
    try {
      seenOpen = await waitFor(async () => (await breakerViews(breakers)).find((b) => b.open), 30_000, "the link's breaker to open");
      // Probes fail while the server hangs: the breaker stays open, nothing fails for good.
      await waitFor(async () => ((await breakers.get(seenOpen!.link))?.failedProbes ?? 0) >= 1 || undefined, 20_000, "a failed probe");
    } finally {
      s3.resume();
    }
    expect(seenOpen).toMatchObject({ category: expect.stringMatching(/^(timeout|network|unavailable|throttled)$/), link: expect.stringContaining("s3://outage") });
    // Nothing to do by hand: the probe closes the breaker, the ranges resume, and the files
    // that failed before it opened are retried (retry-failed is enqueued on closing).
    const deadline = Date.now() + 90_000;
    for (;;) {
      const s = await fileSummary(h.runtime);
      const open = await h.runtime.db.query("SELECT 1 FROM migration_ranges WHERE status <> 'COMPLETE'");
      if (s.withoutOutcome === 0 && s.FAIL === 0 && s.RETRYING === 0 && open.rowCount === 0) break;
      if (Date.now() > deadline) {
        const failed = await h.runtime.db.query("SELECT file_id, error_category, retry_count, error_message FROM migration_files WHERE status <> 'SUCCESS'");
        throw new Error(`not finished after the outage: ${JSON.stringify(s)}, ${open.rowCount} ranges open, not succeeded: ${JSON.stringify(failed.rows)}`);
      }
      const permanent = await h.runtime.db.query("SELECT file_id, error_category FROM migration_files WHERE status = 'FAIL' AND NOT (error_category = ANY($1::text[]))", [RETRYABLE_CATEGORIES]);
      expect(permanent.rows).toEqual([]);
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(await breakers.get(seenOpen!.link)).toBeNull();
    expect(h.logLines.some((l) => l.includes('"link breaker opened: work on the link pauses until a probe succeeds"'))).toBe(true);
    expect(h.logLines.some((l) => l.includes('"link breaker closed: the link works again"'))).toBe(true);
    // The link's faults used none of the files' retries.
    const retried = await h.runtime.db.query<{ n: number }>("SELECT count(*)::int AS n FROM migration_files WHERE retry_count > 0");
    expect(retried.rows[0]!.n).toBe(0);
    const { rows } = await h.runtime.db.query<{ n: number; distinct_files: number }>("SELECT count(*)::int AS n, count(DISTINCT file_id)::int AS distinct_files FROM migration_files");
    expect(rows[0]).toEqual({ n: 400, distinct_files: 400 });
    let objects = 0;
    for await (const _ of h.runtime.deps.destination.list("")) objects++;
    expect(objects).toBe(400);
    for (const f of files) expect(sha(await h.runtime.deps.destination.readBuffer(f.key))).toBe(f.sha256);
    const metrics = await h.runtime.metrics.registry.getSingleMetricAsString("fleet_link_breaker_openings_total");
    expect(metrics).toMatch(/fleet_link_breaker_openings_total\{[^}]*\} [1-9]/);
  }, 180_000);

  it("records the source version (size, ETag) of what it copies from S3", async () => {
    const from = await createPipelineHarness("from-s3-version", {
      BATCH_SIZE: "10",
      SOURCE_URL: `s3://outage?endpoint=${encodeURIComponent(s3.endpoint)}&region=${s3.region}`,
      SOURCE_S3_ACCESS_KEY_ID: s3.accessKeyId,
      SOURCE_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
    });
    try {
      const key = (await (async () => {
        for await (const o of from.runtime.deps.source.list("")) return o.key;
        return undefined;
      })())!;
      const head = await from.runtime.deps.source.stat(key);
      await from.runtime.db.query(`INSERT INTO source_files (uri, name, size, owner) VALUES ($1, $1, $2, 't')`, [key, head.size]);
      await migrateAll(from);
      const row = (await from.runtime.db.query<{ status: string; source_size: number; source_etag: string; source_mtime: Date }>("SELECT status, source_size, source_etag, source_mtime FROM migration_files")).rows[0]!;
      expect(row).toMatchObject({ status: "SUCCESS", source_size: head.size, source_etag: expect.stringMatching(/^[0-9a-f]{32}$/) });
      expect(row.source_mtime).toBeInstanceOf(Date);
    } finally {
      await from.close();
    }
  });
});

describe("SFTP → local, configured by URL and SOURCE_SSH_* variables", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("reads every file over SFTP, host key checked against the known_hosts file", async () => {
    h = await createPipelineHarness("from-sftp", {
      BATCH_SIZE: "25",
      SOURCE_URL: `sftp://${ssh.user}@${ssh.host}:${ssh.port}${ssh.root}/export`,
      SOURCE_SSH_KEY_FILE: keyFile,
      SOURCE_SSH_KNOWN_HOSTS_FILE: knownHostsFile,
    });
    // The server sees the test's filesystem: files written under its root are what it serves.
    const files = await seedSourceFiles(h.runtime.db, join(ssh.root, "export"), {
      count: 60,
      key: (i) => (i === 2 ? "with space/ünïcode.txt" : `d${i % 4}/f-${i}.bin`),
      missing: new Set([9]),
    });
    await migrateAll(h);
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: 59, FAIL: 1, RETRYING: 0, withoutOutcome: 0 });
    const failed = await h.runtime.db.query("SELECT file_id, error_category, old_uri FROM migration_files WHERE status = 'FAIL'");
    expect(failed.rows).toEqual([{ file_id: files[9]!.id, error_category: "not-found", old_uri: expect.stringMatching(/^sftp:\/\/root@127\.0\.0\.1:\d+\//) }]);
    for (const [i, f] of files.entries()) {
      if (i === 9) continue;
      expect(sha(await readFile(join(h.destDir, f.key)))).toBe(f.sha256);
    }
  });
});

describe("remote storage configuration errors", () => {
  const schema = z.object({ ...redisFields, ...databaseFields, ...migrationFields, ...storageFields });
  const log = createLogger({ name: "config-test", LOG_LEVEL: "silent", LOG_FORMAT: "json" });
  const open = (env: Record<string, string>) => {
    const runtime = createFleetRuntime({ config: parseConfig(schema, env), log, role: "test" });
    void runtime.close();
  };
  const sftpSource = () => `sftp://${ssh.user}@${ssh.host}:${ssh.port}${ssh.root}`;

  const configError = (env: Record<string, string>): ConfigError => {
    try {
      open(env);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return err as ConfigError;
    }
    throw new Error("expected a ConfigError");
  };

  it("refuses an SFTP source without a host key, naming the variable to set", () => {
    const err = configError({ SOURCE_URL: sftpSource(), SOURCE_SSH_KEY_FILE: keyFile });
    expect(err.message).toContain("SOURCE_URL");
    expect(err.message).toMatch(/no host key configured for \[127\.0\.0\.1\]:\d+/);
  });

  it("refuses an SFTP source without a key or password", () => {
    const err = configError({ SOURCE_URL: sftpSource(), SOURCE_SSH_HOST_FINGERPRINT: ssh.hostFingerprint });
    expect(err.message).toMatch(/SOURCE_URL: .*configure a private key or a password/);
  });

  it("names an unreadable key file", () => {
    const err = configError({ SOURCE_URL: sftpSource(), SOURCE_SSH_KEY_FILE: join(secrets, "nope"), SOURCE_SSH_HOST_FINGERPRINT: ssh.hostFingerprint });
    expect(err.message).toContain(`SOURCE_SSH_KEY_FILE: cannot read ${join(secrets, "nope")}: ENOENT`);
  });

  it("wants S3 access key and secret together, and never prints the secret", () => {
    const err = configError({
      DESTINATION_URL: "s3://bucket",
      DESTINATION_S3_SECRET_ACCESS_KEY: "very-secret-value",
    });
    expect(err.message).toContain("DESTINATION_S3_ACCESS_KEY_ID and DESTINATION_S3_SECRET_ACCESS_KEY go together");
    expect(err.message).not.toContain("very-secret-value");
  });

  it("refuses credentials inside an s3:// URL without repeating them", () => {
    const err = configError({ DESTINATION_URL: "s3://AKIA:hunter2@bucket/x" });
    expect(err.message).toContain("DESTINATION_URL: s3 storage URL carries credentials");
    expect(err.message).not.toContain("hunter2");
  });

  it("names an unknown scheme", () => {
    const err = configError({ DESTINATION_URL: "ftp://host/x" });
    expect(err.message).toMatch(/DESTINATION_URL: storage URL scheme ftp is not supported \(supported: .*s3:\/\/.*sftp:\/\//);
  });
});
