import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Queue } from "bullmq";
import { createRedis } from "@fleet/core/redis";
import { createPipelineHarness, finishedJob } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * The two attacks of issue 10 on unpack's target, replayed against a real worker: a payload
 * that names a folder (a home's .ssh, to replace authorized_keys) and one that names an S3
 * URL whose endpoint is a listener of the attacker's. Both must fail as invalid-payload, at
 * submission through the client and again at the worker for a job put in Redis directly,
 * with the folder untouched and the listener never called.
 */
describe("unpack targets are configured storage names, never URLs or paths", () => {
  let h: PipelineHarness;
  let base: string;
  let home: string;
  let restoreDir: string;
  let listener: Server;
  let listenerUrl: string;
  const received: string[] = [];
  const ORIGINAL_KEYS = "ssh-ed25519 AAAA-the-owner's-key owner@laptop\n";

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), "fleet-unpack-targets-"));
    home = join(base, "home", "victim");
    restoreDir = join(base, "restore");
    await mkdir(join(home, ".ssh"), { recursive: true });
    await writeFile(join(home, ".ssh", "authorized_keys"), ORIGINAL_KEYS);
    await mkdir(restoreDir);
    listener = createServer((req, res) => {
      received.push(`${req.method} ${req.url} ${req.headers.authorization ?? ""}`);
      res.writeHead(500).end();
    });
    await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
    listenerUrl = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`;
    h = await createPipelineHarness("unpack-targets", {
      TARGET_STORAGES: `restore=${restoreDir}`,
      DESTINATION_S3_ACCESS_KEY_ID: "AKIADESTINATIONKEY01",
      DESTINATION_S3_SECRET_ACCESS_KEY: "destination-secret-key-material",
    });
    // A manifest in the destination, as a real attack would name one.
    await h.runtime.deps.destination.write(".fleet-packages/range-1/part-1-1.manifest.json", Buffer.from("{}"));
  });
  afterAll(async () => {
    await h?.close();
    await new Promise((resolve) => listener.close(resolve));
    await rm(base, { recursive: true, force: true });
  });

  const attacks = () => [
    join(home, ".ssh"),
    `file://${join(home, ".ssh")}`,
    `s3://internal/x?endpoint=${encodeURIComponent(listenerUrl)}`,
    `sftp://root@127.0.0.1:22/root/.ssh`,
    "restore/../../home/victim/.ssh",
    "restore//etc",
  ];

  it("refuses each attack at submission with a clear invalid-payload error", async () => {
    for (const target of attacks()) {
      const err = await h.runtime.deps.jobs
        .enqueue("unpack", { manifest: ".fleet-packages/range-1/part-1-1.manifest.json", target, ifExists: "overwrite" })
        .then(() => undefined, (e: unknown) => e as { category: string; message: string });
      expect([target, err?.category]).toEqual([target, "invalid-payload"]);
      expect(err!.message).toMatch(/invalid payload for job "unpack": target: (must be a configured storage name|the folder after the storage name)/);
    }
  });

  it("refuses a manifest or a scan prefix that is not a key, and oversized remote-command values, at submission", async () => {
    const refused = async (name: "unpack" | "inventory-scan" | "remote-command", payload: Record<string, unknown>) =>
      h.runtime.deps.jobs.enqueue(name, payload as never).then(
        () => "accepted",
        (e: { category?: string; message?: string }) => `${e.category}: ${e.message?.slice(0, 120)}`,
      );
    for (const manifest of ["/etc/x.manifest.json", "../../../etc/passwd\u0000.manifest.json", "a/../b.manifest.json", `${"a".repeat(2_000)}.manifest.json`]) {
      expect([manifest.slice(0, 40), await refused("unpack", { manifest })]).toEqual([manifest.slice(0, 40), expect.stringMatching(/^invalid-payload: invalid payload for job "unpack": manifest: /)]);
    }
    for (const prefix of ["../../etc/", "/etc/", "a/\u0000/"]) {
      expect([prefix, await refused("inventory-scan", { prefix })]).toEqual([prefix, expect.stringMatching(/^invalid-payload: invalid payload for job "inventory-scan": prefix: /)]);
    }
    expect(await refused("remote-command", { server: "s", command: "c", values: { v: "x".repeat(70_000) } })).toMatch(/^invalid-payload: invalid payload for job "remote-command": values/);
  });

  it("fails each attack at the worker too, for a job that reached Redis without the client, touching nothing", async () => {
    const producer = createRedis(h.config.REDIS_URL, "producer");
    const queue = new Queue("migration", { connection: producer, prefix: h.runtime.prefix });
    try {
      await h.startRunner({ queues: ["migration"] });
      for (const [i, target] of attacks().entries()) {
        const job = await queue.add("unpack", { manifest: ".fleet-packages/range-1/part-1-1.manifest.json", target, ifExists: "overwrite" }, { jobId: `attack-${i}`, attempts: 3 });
        const done = await finishedJob(h.runtime, "migration", job.id!);
        expect([target, done.state, done.job.attemptsMade]).toEqual([target, "failed", 1]);
        expect(done.job.failedReason).toMatch(/^invalid-payload: target: /);
      }
      // An unknown name passes the shape check and fails as invalid-payload at the worker.
      const unknown = await queue.add("unpack", { manifest: ".fleet-packages/range-1/part-1-1.manifest.json", target: "home/victim/.ssh" }, { jobId: "attack-unknown", attempts: 3 });
      const done = await finishedJob(h.runtime, "migration", unknown.id!);
      expect([done.state, done.job.attemptsMade]).toEqual(["failed", 1]);
      expect(done.job.failedReason).toMatch(/target "home" is not a configured storage \(known: destination, restore; add it to TARGET_STORAGES\)/);
    } finally {
      await queue.close();
      producer.disconnect();
    }
    expect(await readFile(join(home, ".ssh", "authorized_keys"), "utf8")).toBe(ORIGINAL_KEYS);
    expect(await readdir(join(home, ".ssh"))).toEqual(["authorized_keys"]);
    expect(received).toEqual([]);
  });

  it("opens configured names and folders under them, confined: a symlinked folder cannot lead out", async () => {
    const target = h.runtime.deps.openTarget("restore/alice/2024");
    try {
      await target.write("report.txt", Buffer.from("restored"));
      expect(await readFile(join(restoreDir, "alice", "2024", "report.txt"), "utf8")).toBe("restored");
      expect(target.label).toMatch(/restore\/alice\/2024$/);
    } finally {
      await target.close();
    }
    await symlink(join(home, ".ssh"), join(restoreDir, "escape"));
    const escape = h.runtime.deps.openTarget("restore/escape");
    try {
      const err = await escape.write("authorized_keys", Buffer.from("ssh-ed25519 attacker"), { ifExists: "overwrite" }).catch((e: unknown) => e as { category: string });
      expect(err).toMatchObject({ category: "invalid-key" });
    } finally {
      await escape.close();
    }
    expect(await readFile(join(home, ".ssh", "authorized_keys"), "utf8")).toBe(ORIGINAL_KEYS);
    expect(() => h.runtime.deps.openTarget("elsewhere")).toThrow(/target "elsewhere" is not a configured storage/);
  });
});
