import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect } from "node:net";
import type { AddressInfo, Server, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Queue } from "bullmq";
import { bullPrefix } from "@fleet/core/redis";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { fleet } from "./runFleet";

/**
 * Ctrl-C ends `fleet migrate status --watch` also while a read waits: PostgreSQL stops answering
 * mid-watch (a TCP proxy that stops forwarding its answers: a hung server or a network
 * partition). Found by review: the watch ended, but closing the runtime (pool.end() waits for
 * the query still checked out) kept the process for good; closing is now bounded (5 s).
 */
describe("fleet migrate status --watch, PostgreSQL stops answering", () => {
  let database: TestDatabase;
  let proxy: Server;
  let frozen = false;
  const upstreams: Socket[] = [];
  const sockets: Socket[] = [];
  const prefix = uniquePrefix("status-watch");
  let root: string;

  beforeAll(async () => {
    const queue = new Queue("migration", { connection: { url: testRedisUrl() }, prefix: bullPrefix(prefix) });
    await queue.waitUntilReady();
    await queue.close();
    database = await createTestDatabase();
    root = mkdtempSync(join(tmpdir(), "status-watch-"));
    proxy = createServer((client) => {
      const upstream = connect(5432, "127.0.0.1");
      upstreams.push(upstream);
      sockets.push(client);
      client.pipe(upstream);
      upstream.on("data", (d: Buffer) => {
        if (!frozen) client.write(d);
      });
      client.on("error", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
      client.on("close", () => upstream.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  });
  afterAll(async () => {
    for (const s of [...sockets, ...upstreams]) s.destroy();
    await new Promise((resolve) => proxy?.close(resolve));
    await database?.drop();
    await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
    rmSync(root, { recursive: true, force: true });
  });

  it("exits soon after Ctrl-C while a read waits on PostgreSQL", async () => {
    const port = (proxy.address() as AddressInfo).port;
    const url = new URL(database.url);
    url.host = `127.0.0.1:${port}`;
    const env = { DATABASE_URL: url.toString(), REDIS_URL: testRedisUrl(), FLEET_PREFIX: prefix, SOURCE_URL: join(root, "src"), DESTINATION_URL: join(root, "dst"), LOG_LEVEL: "warn" };
    const run = fleet(env, ["migrate", "status", "--watch"]);
    let err = "";
    let out = "";
    run.child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    run.child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    // The first report is out (a line on stderr without a terminal): now PostgreSQL stops answering.
    const start = Date.now();
    while (!err.includes("\n") && Date.now() - start < 20_000) await new Promise((r) => setTimeout(r, 100));
    expect(err).toContain("\n");
    frozen = true;
    await new Promise((r) => setTimeout(r, 2_500)); // the next read (every second) now waits
    run.child.kill("SIGINT");
    const exited = await Promise.race([run.then((r) => `exit ${r.code ?? r.signal}`), new Promise<string>((r) => setTimeout(() => r("still running 10 s after Ctrl-C"), 10_000))]);
    if (exited.startsWith("still")) run.child.kill("SIGKILL");
    process.stdout.write(`${exited}\nstderr: ${err}\nstdout (the report, printed once the watch ended): ${out.slice(0, 300)}\n`);
    // The watch did end (its report is on stdout): what keeps the process is closing the runtime.
    expect(out).toMatch(/\S/);
    expect(exited).toBe("exit 130");
  }, 60_000);
});
