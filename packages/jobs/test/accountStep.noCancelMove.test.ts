import type { ChildProcess } from "node:child_process";
import { createServer, connect } from "node:net";
import type { Server, Socket } from "node:net";
import type { PipelineHarness } from "./pipelineHarness";
import { waitFor } from "./pipelineHarness";
import type { AccountSite } from "./accountRunFixture";
import { killInFlightAndRestart, moveAccount, moveWorkflow, openMoveHarness, spawnCompiledWorker, startMoveSite, stopMoveSite, writeMoveServersFile } from "./accountStepMoveFixture";

/**
 * A step without a cancel command that moves from m1 to m2 clears started_on (nothing to cancel
 * on m1) under the row's lease, like the cancel of a step that has one. Found by review: it was
 * the one unfenced write of a move, so a run that read the row before another run started the
 * step on m2 cleared started_on there, and a later move or cancel of the account no longer knew
 * that the command runs on m2.
 *
 * Real processes (the compiled worker app, sshd, Postgres, Redis). The run is held between its
 * look at the row and the clear by its probe of m2 (marked down), whose SSH connection goes
 * through a loopback relay that the test opens when it wants; meanwhile "another run" starts
 * the step on m2 (the row as takeSlot leaves it).
 */

let site: AccountSite;
let h: PipelineHarness | undefined;
const children: ChildProcess[] = [];
let relay: Server | undefined;

beforeAll(async () => {
  site = await startMoveSite();
});
afterAll(async () => {
  relay?.close();
  await stopMoveSite(site, h, children);
});

/** A TCP relay to `port` that holds each connection, unread, until open() is called. */
async function heldRelay(port: number): Promise<{ port: number; connected: Promise<void>; open: () => void }> {
  const held: Socket[] = [];
  let opened = false;
  let onConnect: () => void = () => {};
  const connected = new Promise<void>((resolve) => (onConnect = resolve));
  const pipe = (socket: Socket) => {
    const upstream = connect(port, "127.0.0.1");
    socket.pipe(upstream).pipe(socket);
    socket.on("error", () => upstream.destroy());
    upstream.on("error", () => socket.destroy());
  };
  relay = createServer((socket) => {
    socket.pause();
    onConnect();
    if (opened) pipe(socket);
    else held.push(socket);
  });
  await new Promise<void>((resolve) => relay!.listen(0, "127.0.0.1", resolve));
  const open = () => {
    opened = true;
    for (const socket of held.splice(0)) pipe(socket);
  };
  return { port: (relay.address() as { port: number }).port, connected, open };
}

it("a run that read the row before another run started the step on the new server leaves its started_on alone", async () => {
  const workflow = moveWorkflow({}).replace(/\n\s*cancel: fx-cancel \{externalId\} \{server\}/, "");
  expect(workflow).not.toContain("cancel:");
  h = await openMoveHarness(site, h, "step-move-no-cancel", workflow);
  const t = await moveAccount(site, h, "step-move-no-cancel", "nc1");
  const db = t.x.runtime.db;
  const m2 = await heldRelay(site.ssh.port);
  const startedOn = async () => (await db.query<{ started_on: string | null }>(`SELECT started_on FROM account_step`)).rows[0]?.started_on;

  // nc1's command hangs on m1 and its worker is SIGKILLed; m1 is disabled. Before the next worker
  // starts, the step is where a run that moved it to m2 leaves it (waiting, started_on m1), and
  // m2 is marked down, so the next run probes m2 (through the held relay) before it clears.
  await killInFlightAndRestart(site, t, (env) => spawnCompiledWorker(site.dir, env, children), async () => {
    await writeMoveServersFile(site, site.ssh.port, m2.port);
    await db.query(`UPDATE account_step SET phase = 'WAITING', waiting_for = 'moved from m1 to m2', lease_owner = NULL, lease_at = NULL`);
    await db.query(`UPDATE batch_assignment SET server = 'm2' WHERE role = 'migration'`);
    await db.query(`UPDATE migration_server SET health = 'down', last_error = 'test: marked down', checked_at = NULL, probing_at = NULL WHERE name = 'm2'`);
  });
  expect(await startedOn()).toBe("m1");
  // The step's run is in serverGate's probe of m2 (claimed, its connection held), past its look at the row.
  await m2.connected;
  expect((await db.query(`SELECT 1 FROM migration_server WHERE name = 'm2' AND probing_at IS NOT NULL`)).rowCount).toBe(1);

  // Meanwhile another run starts the step on m2 (takeSlot: RUNNING, started_on m2, its lease).
  await db.query(`UPDATE account_step SET phase = 'RUNNING', server = 'm2', started_on = 'm2', attempt = attempt + 1, waiting_for = NULL, lease_owner = 'another-run', lease_at = now()`);
  m2.open();
  await waitFor(async () => (await db.query(`SELECT 1 FROM migration_log WHERE message LIKE 'server m2 is % again%'`)).rowCount || undefined, 30_000, "the probe of m2 to end");
  // The held run goes on from its look at the row; give it time to clear, if it does.
  await new Promise((r) => setTimeout(r, 1500));
  const { rows: warned } = await db.query(`SELECT message FROM migration_log WHERE message LIKE '%may still be running there%'`);
  expect({ startedOn: await startedOn(), warned }).toEqual({ startedOn: "m2", warned: [] });
}, 180_000);

it("without a race, the step moves on with the warning and runs on the new server", async () => {
  const workflow = moveWorkflow({}).replace(/\n\s*cancel: fx-cancel \{externalId\} \{server\}/, "");
  h = await openMoveHarness(site, h, "step-move-no-cancel-plain", workflow);
  const t = await moveAccount(site, h, "step-move-no-cancel-plain", "nc2");
  await killInFlightAndRestart(site, t, (env) => spawnCompiledWorker(site.dir, env, children), async () => {});
  const done = await waitFor(async () => {
    const s = await t.account();
    return ["DONE", "FAILED", "POSTPONED"].includes(s.status) ? s : undefined;
  }, 60_000, "nc2 to finish");
  expect(done).toEqual({ status: "DONE", last_error: null });
  expect(await t.runsAndCancels()).toEqual(["run [nc2] [m1]", "run [nc2] [m2]"]);
  const { rows } = await t.x.runtime.db.query<{ message: string }>(`SELECT message FROM migration_log WHERE subject = 'account:nc2' AND message LIKE '%may still be running there%'`);
  expect(rows.map((r) => r.message)).toEqual(["migrate: moved from m1 to m2; the command started on m1 may still be running there (the step has no cancel command)"]);
}, 180_000);
