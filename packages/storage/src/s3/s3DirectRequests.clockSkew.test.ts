import { randomBytes } from "node:crypto";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { S3Storage } from "./s3Storage";
import { startRecorder } from "@fleet/testing/s3RecordingProxy";

/**
 * The SDK corrects a skewed local clock (RequestTimeTooSkewed → systemClockOffset) and signs
 * with the corrected date from then on. The direct requests sign with `new Date()`: on a host
 * whose clock is off by more than 15 minutes every direct request is refused (403) and repeated
 * by the SDK, for the life of the process — the bypass doubles the requests instead of saving CPU.
 */
const BUCKET = "direct-skew";
const SKEW_MS = 20 * 60_000;

describe("direct requests on a host with a skewed clock", () => {
  let server: S3Server;
  let recorder: Awaited<ReturnType<typeof startRecorder>>;
  const RealDate = Date;

  beforeAll(async () => {
    server = await startS3Server();
    await server.createBucket(BUCKET);
    recorder = await startRecorder(server.endpoint);
    // The local clock (this process only) runs 20 minutes ahead of the server's.
    class SkewedDate extends RealDate {
      constructor(...args: unknown[]) {
        if (args.length === 0) super(RealDate.now() + SKEW_MS);
        else super(...(args as [number]));
      }
      static override now(): number {
        return RealDate.now() + SKEW_MS;
      }
    }
    (globalThis as { Date: DateConstructor }).Date = SkewedDate as unknown as DateConstructor;
  });
  afterAll(async () => {
    (globalThis as { Date: DateConstructor }).Date = RealDate;
    await recorder?.close();
    await server?.stop();
  });

  it("direct requests are signed with the SDK's corrected clock, not refused as RequestTimeTooSkewed", async () => {
    const s3 = new S3Storage({
      bucket: BUCKET,
      endpoint: recorder.endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      listingTtlMs: 0, // a HEAD before every write
    });
    try {
      await s3.write("warm/first.bin", randomBytes(100)); // the SDK learns the skew and teaches the direct path
      const from = recorder.seen.length;
      for (let i = 0; i < 5; i++) await s3.write(`d/f-${i}.bin`, randomBytes(100));
      const seen = recorder.seen.slice(from);
      // (The SDK itself also sends each 404 HEAD twice here: its skew correction moves by the
      // Date header's 1 s resolution and retries. Not counted: only the direct requests are.)
      const direct = seen.filter((s) => !s.sdk);
      const refused = direct.filter((s) => s.status === 403);
      expect({ direct: direct.length, refused: refused.length }).toEqual({ direct: 10, refused: 0 });
    } finally {
      await s3.close();
    }
  });
});
