import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { fleet, fleetJson } from "./runFleet";

/**
 * The CLI reads the source root too (`fleet inventory scan`): it records the volume the root is
 * on, as workers do, and once that volume is away it fails saying so — not "an empty listing"
 * nor a root found missing. `fleet volumes` lists the records; `fleet volumes forget ROOT` drops
 * one whose volume was moved on purpose. A real tmpfs, bind-mounted and unmounted (root only).
 */
const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

asRoot("fleet volumes, and a scan of a source whose recorded volume is away", () => {
  let database: TestDatabase;
  let db: pg.Client;
  let base: string;
  let mountPoint: string;
  let volume: string;
  let env: Record<string, string>;
  const mounted: string[] = [];
  const prefix = uniquePrefix("cli-volumes");

  beforeAll(async () => {
    database = await createTestDatabase();
    db = new pg.Client({ connectionString: database.url });
    await db.connect();
    base = await mkdtemp(join(tmpdir(), "fleet-volumes-cli-"));
    mountPoint = join(base, "share");
    volume = join(base, "volume");
    await mkdir(mountPoint);
    await mkdir(volume);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", volume]);
    mounted.push(volume);
    execFileSync("mount", ["--bind", volume, mountPoint]);
    mounted.push(mountPoint);
    await mkdir(join(volume, "in", "user01"), { recursive: true });
    for (let i = 0; i < 5; i++) await writeFile(join(volume, "in", "user01", `f${i}.txt`), `file ${i}`);
    env = { DATABASE_URL: database.url, REDIS_URL: testRedisUrl(), FLEET_PREFIX: prefix, SOURCE_URL: join(mountPoint, "in"), LOG_LEVEL: "warn" };
  });
  afterAll(async () => {
    for (const dir of mounted.reverse()) execFileSync("umount", ["-l", dir]);
    await cleanupPrefix(testRedisUrl(), prefix);
    await db?.end();
    await database?.drop();
    await rm(base, { recursive: true, force: true });
  });

  it("records the source's volume, refuses to scan its empty mount point, and forgets it when told", async () => {
    const root = join(mountPoint, "in");
    expect(await fleetJson(env, ["inventory", "scan"])).toMatchObject({ files: 5, new: 5 });
    expect(await fleetJson(env, ["volumes"])).toEqual([expect.objectContaining({ root, mountPoint, seenBy: expect.stringMatching(/^cli /) })]);

    execFileSync("umount", ["-l", mountPoint]);
    mounted.splice(mounted.indexOf(mountPoint), 1);
    const scan = await fleet(env, ["inventory", "scan"]);
    expect(scan.code).toBe(1);
    expect(scan.err).toContain(`was seen on the volume mounted at ${mountPoint}`);
    expect(scan.err).toContain(`fleet volumes forget ${root}`);
    const vanished = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM source_files WHERE vanished_at IS NOT NULL`);
    expect(vanished.rows[0]!.n).toBe(0);

    const forgotten = await fleet(env, ["volumes", "forget", `file://${root}`]);
    expect([forgotten.code, forgotten.out]).toEqual([0, expect.stringContaining(`forgotten: ${root}  on the volume mounted at ${mountPoint}`)]);
    expect(await fleetJson(env, ["volumes"])).toEqual([]);
    const log = await db.query<{ subject: string }>(`SELECT subject FROM migration_log WHERE message = 'volume record forgotten'`);
    expect(log.rows).toEqual([{ subject: `volume:${root}` }]);
    const again = await fleet(env, ["volumes", "forget", root]);
    expect([again.code, again.err]).toEqual([1, expect.stringContaining(`no volume is recorded for ${root}`)]);
    expect((await fleet(env, ["volumes", "forget", "s3://bucket/in"])).code).toBe(2);
  });

  it("forgets a root named as its URL is configured, a trailing slash or a dot segment included", async () => {
    // SOURCE_URL=file:///…/in/ is the root …/in (the storage resolves it): the record is under that.
    const root = join(mountPoint, "again");
    await mkdir(root, { recursive: true });
    await db.query(`INSERT INTO root_volumes (root, mount_point, seen_by) VALUES ($1, $2, 'test'), ($3, $2, 'test')`, [root, mountPoint, join(mountPoint, "other")]);
    const slash = await fleet(env, ["volumes", "forget", `file://${root}/`]);
    expect([slash.code, slash.out]).toEqual([0, expect.stringContaining(`forgotten: ${root}  on the volume mounted at ${mountPoint}`)]);
    const dotted = await fleet(env, ["volumes", "forget", `file://${mountPoint}/./x/../other`]);
    expect(dotted.code).toBe(0);
    expect(await fleetJson(env, ["volumes"])).toEqual([]);
  });
});
