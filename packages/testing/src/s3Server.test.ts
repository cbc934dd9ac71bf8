import { existsSync } from "node:fs";
import http from "node:http";
import { startS3Server } from "./s3Server";
import type { S3Server } from "./s3Server";

/** An unsigned GET, which s3rver answers as an anonymous request. */
function get(endpoint: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(`${endpoint}${path}`, { agent: false }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (text: string) => (body += text));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on("error", reject);
  });
}

describe("startS3Server", () => {
  let server: S3Server;

  beforeAll(async () => {
    server = await startS3Server();
  });

  afterAll(async () => {
    await server.stop();
  });

  it("serves S3 on loopback with its own data directory, and creates buckets", async () => {
    expect(server.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(existsSync(server.dir)).toBe(true);
    await server.createBucket("fleet-harness");
    await server.createBucket("fleet-harness"); // idempotent
    const listing = await get(server.endpoint, "/fleet-harness?list-type=2");
    expect(listing.status).toBe(200);
    expect(listing.body).toContain("<Name>fleet-harness</Name>");
  });

  it("can be killed (connections refused) and restarted on the same port with the same data", async () => {
    await server.createBucket("survives-restart");
    server.kill();
    // Reset while the process is dying, refused once it is gone.
    await expect(get(server.endpoint, "/")).rejects.toMatchObject({ code: expect.stringMatching(/^ECONN(REFUSED|RESET)$/) });
    await server.restart();
    const listing = await get(server.endpoint, "/survives-restart?list-type=2");
    expect(listing.status).toBe(200);
  });

  it("restart() on a port another server took meanwhile fails, rather than calling the other server ready", async () => {
    const port = Number(new URL(server.endpoint).port);
    server.kill();
    await new Promise((r) => setTimeout(r, 300));
    // Someone else's HTTP server on the port, answering every request.
    const thief = http.createServer((_req, res) => res.end("not s3rver"));
    await new Promise<void>((resolve, reject) => thief.once("error", reject).listen(port, "127.0.0.1", () => resolve()));
    try {
      await expect(server.restart()).rejects.toThrow(/s3rver exited at startup|EADDRINUSE/);
    } finally {
      await new Promise((r) => thief.close(r));
    }
    await server.restart();
    expect((await get(server.endpoint, "/")).status).toBe(200);
  });

  it("removes its data directory on stop", async () => {
    const other = await startS3Server();
    await other.createBucket("short-lived");
    await other.stop();
    expect(existsSync(other.dir)).toBe(false);
  });
});
