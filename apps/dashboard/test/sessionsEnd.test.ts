import { spawn } from "node:child_process";
import { join } from "node:path";
import { createLogger } from "@fleet/core/logger";
import { loadDashboardConfig } from "../src/config";
import { hashPassword } from "../src/passwords";
import { startDashboard } from "../src/startDashboard";
import type { RunningDashboard } from "../src/startDashboard";
import { PASSWORDS, createDashboardFixture, login, send } from "./dashboardFixture";
import type { CookieJar, DashboardFixture } from "./dashboardFixture";

/** The compiled `fleet` (run after npm run build). */
const CLI = join(__dirname, "..", "..", "cli", "dist", "main.js");
const cheap = { N: 1024, r: 8, p: 1 };

describe("sessions end", () => {
  let fx: DashboardFixture;
  const extra: RunningDashboard[] = [];

  beforeAll(async () => {
    fx = await createDashboardFixture("sessions-end");
  });
  afterAll(async () => {
    for (const d of extra) await d.close();
    await fx?.close();
  });

  /** Another replica on the same Redis, database and secret, with some variables changed (a redeploy). */
  async function replicaWith(overrides: Record<string, string>): Promise<RunningDashboard> {
    const config = loadDashboardConfig({ ...fx.env, ...overrides });
    const d = await startDashboard(config, createLogger({ LOG_LEVEL: "silent", LOG_FORMAT: "json", name: "replica" }));
    extra.push(d);
    return d;
  }

  /** A read and a write (pausing a queue on the operators' board) with the session. */
  async function canUse(base: string, jar: CookieJar): Promise<[number, number]> {
    const read = await send(base, "/queues/api/queues?activeQueue=migration&status=latest&page=1", { jar });
    await read.arrayBuffer();
    const write = await send(base, "/queues/api/queues/remote/pause", { method: "PUT", jar, headers: { "x-xsrf-token": jar.get("XSRF-TOKEN") ?? "", origin: base } });
    await write.arrayBuffer();
    return [read.status, write.status];
  }

  function fleet(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
    const env = { PATH: process.env.PATH, FLEET_ENV_FILE: join(__dirname, "no-such.env"), REDIS_URL: fx.env.REDIS_URL, FLEET_PREFIX: fx.prefix, DATABASE_URL: fx.env.DATABASE_URL };
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    return new Promise((resolve) => child.on("close", (code) => resolve({ code, out, err })));
  }

  it("`fleet dashboard sessions revoke USER` ends that user's sessions on every replica, and only theirs", async () => {
    const a = fx.dashboard.url;
    const b = (await fx.replica()).url;
    const alice = (await login(a, "alice", PASSWORDS.alice)).jar;
    const alice2 = (await login(b, "alice", PASSWORDS.alice)).jar;
    const victor = (await login(b, "victor", PASSWORDS.victor)).jar;
    expect(await canUse(a, alice)).toEqual([200, 200]);
    expect(await canUse(b, alice)).toEqual([200, 200]);

    const revoked = await fleet("dashboard", "sessions", "revoke", "alice");
    expect([revoked.code, revoked.err]).toEqual([0, ""]);
    expect(revoked.out).toMatch(/^ended every dashboard session of alice/);

    for (const base of [a, b]) for (const jar of [alice, alice2]) expect(await canUse(base, jar)).toEqual([401, 401]);
    // Victor's session is untouched, and alice can log in again.
    expect((await send(a, "/progress", { jar: victor })).status).toBe(200);
    const again = (await login(b, "alice", PASSWORDS.alice)).jar;
    expect(await canUse(a, again)).toEqual([200, 200]);
  });

  it("a new password hash or role ends the user's existing sessions on the replica that runs the new config", async () => {
    const { jar } = await login(fx.dashboard.url, "alice", PASSWORDS.alice);
    const victor = (await login(fx.dashboard.url, "victor", PASSWORDS.victor)).jar;
    expect(await canUse(fx.dashboard.url, jar)).toEqual([200, 200]);
    const [aliceHash, victorHash] = fx.env.DASHBOARD_USERS!.split(",").map((entry) => entry.split(":")[2]!);
    const users = (alice: string, victorRole = "viewer") => `alice:${alice},victor:${victorRole}:${victorHash}`;

    // Same password, new hash (a rotation): the old cookie is no login there.
    const rotated = await replicaWith({ DASHBOARD_USERS: users(`operator:${await hashPassword(PASSWORDS.alice, cheap)}`) });
    expect(await canUse(rotated.url, jar)).toEqual([401, 401]);
    // Victor promoted to operator: his viewer session ends too.
    const promoted = await replicaWith({ DASHBOARD_USERS: users(`operator:${aliceHash}`, "operator") });
    expect((await send(promoted.url, "/progress", { jar: victor })).status).toBe(401);
    // A session ended is deleted: even the old config's replica no longer knows it.
    expect(await canUse(fx.dashboard.url, jar)).toEqual([401, 401]);
  });
});
