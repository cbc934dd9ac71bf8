import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { classifyTransferError } from "@fleet/core/classifyError";
import { createLogger } from "@fleet/core/logger";
import type { SourceFileRow } from "@fleet/db/sql/files";
import { LocalStorage } from "@fleet/storage/local/localStorage";
import { S3Storage } from "@fleet/storage/s3/s3Storage";
import type { Storage } from "@fleet/storage/storage";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { shipPackage } from "./shipPackage";
import type { PackageSettings } from "./shipPackage";
import { unpackPackage } from "./unpackPackage";

// Packages into a real S3 (s3rver): shipped and unpacked byte for byte; a destination
// that dies mid-tar fails the package retryably (nothing SUCCESS), without a stall.

const BUCKET = "fleet-pkg-s3";
const CREATED = new Date("2024-01-01T00:00:00Z");
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const settings: PackageSettings = { smallFileBytes: 64 * 1024, verify: "readback", ifExists: "fail", copyConcurrency: 4 };
const log = createLogger({ name: "test", LOG_LEVEL: "silent", LOG_FORMAT: "json" });

let server: S3Server;
let root: string;
const opened: Storage[] = [];
beforeAll(async () => {
  server = await startS3Server();
  await server.createBucket(BUCKET);
}, 60_000);
afterAll(async () => {
  await server?.stop();
});
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "fleet-pkg-s3-"));
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
  await rm(root, { recursive: true, force: true });
});

function s3(prefix: string): S3Storage {
  const s = new S3Storage({
    bucket: BUCKET,
    prefix,
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
  } as ConstructorParameters<typeof S3Storage>[0]);
  opened.push(s);
  return s;
}

async function seed(count: number, sizeOf: (i: number) => number): Promise<{ src: LocalStorage; files: SourceFileRow[]; bodies: Map<string, Buffer> }> {
  const src = new LocalStorage({ root: join(root, "src") });
  opened.push(src);
  const files: SourceFileRow[] = [];
  const bodies = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    const key = i % 3 === 0 ? `${"ü".repeat(40)}/f-${i}.bin` : `d/${"x".repeat(i % 5 === 0 ? 150 : 10)}/f-${i}.bin`;
    const body = Buffer.alloc(sizeOf(i));
    for (let j = 0; j < body.length; j += 61) body[j] = (i * 7 + j) & 0xff;
    await src.write(key, body);
    bodies.set(key, body);
    files.push({ id: 1 + i, uri: key, name: `f-${i}.bin`, size: body.length, owner: null, createdAt: CREATED });
  }
  return { src, files, bodies };
}

it("ships to S3 and unpacks every member byte for byte", async () => {
  const { src, files, bodies } = await seed(30, (i) => (i % 7 === 3 ? 2_500_000 + i : i % 4 === 0 ? 0 : 500 + i * 37));
  const dest = s3("ok");
  const shipped = await shipPackage(src, dest, 5, files, settings, new AbortController().signal);
  expect(shipped.results.every((r) => r.ok)).toBe(true);
  const out = new LocalStorage({ root: join(root, "out") });
  opened.push(out);
  const result = await unpackPackage({ packages: dest, manifestKey: shipped.manifestKey!, target: out, ifExists: "fail", smallFileBytes: settings.smallFileBytes, concurrency: 4, signal: new AbortController().signal, log });
  expect(result).toMatchObject({ members: 30, restored: 30 });
  for (const [key, body] of bodies) expect(sha(await out.readBuffer(key))).toBe(sha(body));
}, 60_000);

it("a destination killed mid-tar fails the package retryably, promptly, recording nothing", async () => {
  const { src, files } = await seed(12, () => 3_000_000);
  const dest = s3("killed");
  let killed = false;
  const timer = setTimeout(() => {
    server.kill();
    killed = true;
  }, 300);
  const started = Date.now();
  const outcome = await shipPackage(src, dest, 6, files, settings, new AbortController().signal).then(
    (shipped) => ({ ok: shipped.results.filter((r) => r.ok).length }),
    (err: unknown) => ({ retryable: classifyTransferError(err, "destination").retryable }),
  );
  clearTimeout(timer);
  await server.restart();
  expect(killed).toBe(true);
  expect(outcome).toEqual({ retryable: true });
  expect(Date.now() - started).toBeLessThan(60_000);
}, 120_000);
