import { mkdir } from "node:fs/promises";
import { Writable } from "node:stream";
import { Redis } from "ioredis";
import { RetryableError } from "@fleet/core/errors";
import { LinkBreakers, linkKeyId } from "@fleet/core/linkBreakers";
import { createLogger } from "@fleet/core/logger";
import { testRedisUrl } from "@fleet/testing/testRedis";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { LinkGuard } from "../src/migration/linkGuard";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * Two processes' guards of one link (the same Redis keys), destination s3rver. The breaker is
 * open and its probe due. Guard A's job claims the probe while the destination hangs (s3rver
 * SIGSTOPped for 1.3 s); guard B's job starts meanwhile. B used to be told to come back when
 * the probe lease ran out (PROBE_TIMEOUT_MS 30 s + 5 s), and nothing woke its delayed job when
 * A's probe closed the breaker ~1.3 s later: B's range waited ~35–42 s on a link that worked
 * (seen end to end: a packaged run to S3 finished 41–43 s after s3rver was back, not ~8 s).
 */
describe("a job that starts while another process probes the link", () => {
  let s3: S3Server;
  let h: PipelineHarness;
  let afterRedis: (() => void) | undefined;

  beforeAll(async () => {
    s3 = await startS3Server();
    await s3.createBucket("probes");
    h = await createPipelineHarness("rv-probe-wait", {
      DESTINATION_URL: `s3://probes/fleet?endpoint=${encodeURIComponent(s3.endpoint)}&region=${s3.region}`,
      DESTINATION_S3_ACCESS_KEY_ID: s3.accessKeyId,
      DESTINATION_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
    });
  }, 60_000);
  afterAll(async () => {
    afterRedis?.();
    s3?.resume();
    await h?.close();
    await s3?.stop();
  });

  it("is told to come back within seconds of the probe's end, not after the probe lease's 35 s", async () => {
    const log = createLogger({ name: "rv-probe", LOG_LEVEL: "silent", LOG_FORMAT: "json", destination: new Writable({ write: (_c, _e, cb) => cb() }) });
    const { source, destination, metrics, link } = h.runtime.deps;
    // A client of our own (the runtime's does not queue commands while it connects).
    const redis = new Redis(testRedisUrl());
    afterRedis = () => redis.disconnect();
    await redis.ping();
    await mkdir(h.sourceDir, { recursive: true }); // the source's root, as after an inventory
    const breakers = () => new LinkBreakers(redis, h.runtime.prefix);
    const guard = (owner: string) =>
      new LinkGuard({ source, destination, link: link.link, breakers: breakers(), threshold: 3, probeScheduleMs: [300, 600], owner, log, metrics });
    const a = guard("worker-a");
    const b = guard("worker-b");

    a.trip(new RetryableError("network", "connect ECONNREFUSED (test)"));
    const first = await a.admit();
    expect(first.open).toBe(true); // waits for the opening to reach Redis; probe not due yet
    await new Promise((r) => setTimeout(r, 500)); // the first probe is due

    // The destination hangs for 1.5 s: A's probe is in flight that long.
    s3.pause();
    const probing = a.admit();
    // A holds the probe lease before B asks (a fixed pause assumed A's claim reached Redis in
    // 200 ms; on a loaded machine B could have claimed the probe itself).
    const lease = `${h.runtime.prefix}:breaker:${linkKeyId(link.link)}:probe`;
    for (const until = Date.now() + 10_000; (await redis.get(lease)) !== "worker-a"; ) {
      if (Date.now() > until) throw new Error(`A never claimed the probe lease ${lease}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    const bAsked = Date.now();
    const bAdmission = await b.admit();
    setTimeout(() => s3.resume(), 1_300);
    const aAdmission = await probing;
    const probeEnded = Date.now();

    // A probe succeeded: the link works again, fleet-wide.
    expect(aAdmission).toEqual({ open: false });
    expect(await breakers().get(link.link)).toBeNull();
    // B's job was delayed until bAdmission.until (nothing promotes it when the breaker closes).
    expect(bAdmission.open).toBe(true);
    const bWaitsMs = bAdmission.open ? bAdmission.until.getTime() - bAsked : 0;
    // eslint-disable-next-line no-console
    console.log(JSON.stringify({ bWaitsMs, probeMs: probeEnded - bAsked, idleAfterLinkBackMs: bAdmission.open ? bAdmission.until.getTime() - probeEnded : 0 }));
    expect(bWaitsMs).toBeLessThan(5_000);
  }, 60_000);
});
