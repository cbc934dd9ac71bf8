import { ConfigError } from "@fleet/core/errors";
import { setServerEnabled } from "@fleet/db/sql/migrationServers";
import { planBatch } from "../src/accounts/planBatch";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadWorkflowFile, parseWorkflow } from "../src/accounts/workflowFile";
import { RemoteServers } from "../src/remote/remoteServers";
import type { RegisteredServer } from "../src/remote/serversFile";
import { DEFAULT_REMOTE_ERROR_PATTERNS } from "@fleet/remote/remoteErrors";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { insertAccounts } from "./accountsFixture";

/** Batch planning on a real database: capacity, roles, balance, once per date. */

const sshServer = (name: string, port: number): [string, RegisteredServer] => [
  name,
  { name, target: { host: `${name}.example.org`, port, username: "m", hostKey: { fingerprint: "SHA256:x" } }, commands: {}, timeoutMs: 1000, errorPatterns: DEFAULT_REMOTE_ERROR_PATTERNS, env: {}, files: [], builtinPaths: [] },
];
const remote = new RemoteServers(new Map([sshServer("exp-ssh", 22), sshServer("mig-ssh", 2222)]));

const workflow = parseWorkflow(
  {
    servers: {
      exp1: { ssh: "exp-ssh", role: "export", capacity: 100 },
      mig1: { ssh: "mig-ssh", role: "migration", capacity: 4 },
      mig2: { ssh: "mig-ssh", role: "migration", capacity: 2 },
      mig3: { ssh: "mig-ssh", role: "migration", capacity: 5 },
    },
    steps: [
      { name: "export", role: "export", command: "export-mailbox {email}" },
      { name: "migrate", role: "migration", command: "migrate {email} {batchId}" },
    ],
  },
  "test workflow",
);

let h: PipelineHarness;
beforeAll(async () => {
  h = await createPipelineHarness("account-plan");
});
afterAll(async () => h?.close());

describe("batch planning", () => {
  it("takes as many QUEUED accounts as every role can serve, oldest consent first, balanced by capacity over enabled servers; once per date", async () => {
    const ids = await insertAccounts(h.runtime, Array.from({ length: 10 }, (_, i) => ({ externalId: `u${i}` })));
    await planBatch({ db: h.runtime.db, workflow, remote, runDate: "2026-11-29", batchMax: 1000, log: h.log }); // registers the servers
    await h.runtime.db.query(`DELETE FROM batch_assignment; DELETE FROM migration_batch; UPDATE migration_queue SET status = 'QUEUED', batch_id = NULL`);
    await setServerEnabled(h.runtime.db, "mig3", false);

    const plan = await planBatch({ db: h.runtime.db, workflow, remote, runDate: "2026-11-30", batchMax: 1000, log: h.log });
    expect(plan).toMatchObject({ created: true, accounts: 6, perServer: { exp1: 6, mig1: 4, mig2: 2 } });
    const { rows: scheduled } = await h.runtime.db.query<{ id: number }>(`SELECT id FROM migration_queue WHERE status = 'SCHEDULED' AND batch_id = $1 ORDER BY id`, [plan.batchId]);
    expect(scheduled.map((r) => r.id)).toEqual(ids.slice(0, 6)); // the oldest consents
    const { rows: servers } = await h.runtime.db.query(`SELECT name, host, port, credential_ref, enabled FROM migration_server ORDER BY name`);
    expect(servers).toEqual([
      { name: "exp1", host: "exp-ssh.example.org", port: 22, credential_ref: "exp-ssh", enabled: true },
      { name: "mig1", host: "mig-ssh.example.org", port: 2222, credential_ref: "mig-ssh", enabled: true },
      { name: "mig2", host: "mig-ssh.example.org", port: 2222, credential_ref: "mig-ssh", enabled: true },
      { name: "mig3", host: "mig-ssh.example.org", port: 2222, credential_ref: "mig-ssh", enabled: false },
    ]);

    // Two planners at once (replicas, a re-run): one batch, nothing assigned twice.
    const again = await Promise.all([1, 2].map(() => planBatch({ db: h.runtime.db, workflow, remote, runDate: "2026-11-30", batchMax: 1000, log: h.log })));
    expect(again.map((p) => [p.batchId, p.created])).toEqual([[plan.batchId, false], [plan.batchId, false]]);
    const { rows } = await h.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM batch_assignment WHERE batch_id = $1`, [plan.batchId]);
    expect(rows[0]!.n).toBe(12);
  });

  it("refuses a workflow whose steps need a role no server has, or whose templates use unknown placeholders", () => {
    expect(() =>
      parseWorkflow({ servers: { a: { ssh: "x", role: "export", capacity: 1 } }, steps: [{ name: "s", role: "sync", command: "run {mailbox}" }] }, "wf", new Set(["y"])),
    ).toThrow(ConfigError);
    let issues: readonly string[] = [];
    try {
      parseWorkflow({ servers: { a: { ssh: "x", role: "export", capacity: 1 } }, steps: [{ name: "s", role: "sync", command: "run '{email}' {mailbox}" }] }, "wf", new Set(["y"]));
    } catch (err) {
      issues = (err as ConfigError).issues;
    }
    {
      expect(issues).toEqual([
        `wf: servers.a.ssh: "x" is not a server of SSH_SERVERS_FILE`,
        `wf: steps.0.role: no server has role "sync" (roles: export)`,
        expect.stringMatching(/steps\.0\.command: .*\{email\} inside '…' quotes/),
      ]);
    }
  });

  it("reads the workflow YAML and lists every problem of a bad one with its path", async () => {
    const dir = await mkdtemp(join(tmpdir(), "fleet-workflow-"));
    try {
      const file = join(dir, "workflow.yaml");
      await writeFile(file, "servers:\n  m1: { ssh: box, role: migration, capacity: 2 }\nsteps:\n  - name: migrate\n    role: migration\n    command: migrate {email}\n    check: { command: \"status {email}\", done: \"^OK\", failed: \"(\", every: soon }\n");
      let issues: readonly string[] = [];
      try {
        loadWorkflowFile(file, new Set(["box"]));
      } catch (err) {
        issues = (err as ConfigError).issues;
      }
      expect(issues).toEqual([
        expect.stringMatching(/steps\.0\.check\.every: expected a duration/),
        expect.stringMatching(/steps\.0\.check\.failed: not a valid regular expression/),
      ]);
      await writeFile(file, "servers:\n  m1: { ssh: box, role: migration, capacity: 2 }\nsteps:\n  - { name: migrate, role: migration, command: 'migrate {email}', check: { command: 'status {email}', done: '^OK', failed: '^ERR', every: 5s } }\n");
      const wf = loadWorkflowFile(file, new Set(["box"]));
      expect(wf.steps[0]).toMatchObject({ name: "migrate", attempts: 1, timeoutMs: 300_000, check: { everyMs: 5_000, timeoutMs: 4 * 3600_000 } });
      expect(wf.templates["pre-migration"].subject).toContain("{runDate}");
      expect(() => loadWorkflowFile(join(dir, "missing.yaml"))).toThrow(/ACCOUNTS_WORKFLOW_FILE .*missing\.yaml: cannot read it/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
