import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { sshServerEntry, writeServersFile, writeSshClientFiles } from "@fleet/testing/sshServersFile";
import type { ServerEntry } from "@fleet/testing/sshServersFile";
import { createPipelineHarness, finishedJob } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * Scripts that play a site's tools on a real sshd: a mailbox export, a migration tool with a
 * status command to poll, a directory sync and a group command. Each appends its arguments,
 * bracketed, to $FX_STATE/calls, so a test can see exactly which words arrived. Behaviour by
 * external id: fail-export* (permanent "mailbox not found"), fail-mig* (status FAILED),
 * hang-mig* (status never done), hang-sync* (the sync never returns), slow* (migration takes
 * many polls).
 */
export const TOOL_SCRIPTS: Record<string, string> = {
  "fx-export": `#!/bin/sh
printf 'export [%s] [%s]\\n' "$1" "$2" >> "$FX_STATE/calls"
case "$1" in fail-export*) echo "mailbox not found: $1" >&2; exit 3;; esac
echo "exported $1"
`,
  "fx-mig-start": `#!/bin/sh
printf 'mig-start [%s]\\n' "$1" >> "$FX_STATE/calls"
echo 0 > "$FX_STATE/mig-$1"
echo started
`,
  "fx-mig-status": `#!/bin/sh
n=$(cat "$FX_STATE/mig-$1"); n=$((n+1)); echo $n > "$FX_STATE/mig-$1"
case "$1" in
  fail-mig*) echo "FAILED: quota exceeded on target"; exit 0;;
  hang-mig*) echo "RUNNING $n"; exit 0;;
  slow*) if [ $n -ge 40 ]; then echo COMPLETED; else echo "RUNNING $n"; fi; exit 0;;
esac
if [ $n -ge 2 ]; then echo "COMPLETED"; else echo "RUNNING $n"; fi
`,
  "fx-sync": `#!/bin/sh
printf 'sync [%s]\\n' "$1" >> "$FX_STATE/calls"
case "$1" in hang-sync*) sleep 600;; esac
echo synced
`,
  "fx-group": `#!/bin/sh
printf 'group [%s] [%s]\\n' "$1" "$2" >> "$FX_STATE/calls"
`,
  "fx-group-remove": `#!/bin/sh
printf 'group-remove [%s] [%s]\\n' "$1" "$2" >> "$FX_STATE/calls"
`,
  "fx-mig-cancel": `#!/bin/sh
printf 'mig-cancel [%s]\\n' "$1" >> "$FX_STATE/calls"
echo "migration of $1 aborted"
`,
  "fx-health": `#!/bin/sh
echo healthy
`,
};

export interface AccountSite {
  ssh: SshServer;
  dir: string;
  state: string;
  env: Record<string, string>;
  /** The entries of servers.yaml (`box`: the site's sshd, FX_STATE set), to write a servers file with more. */
  servers: Record<string, ServerEntry>;
  /** Stops sshd and removes the site's folder. */
  stop(): Promise<void>;
}

/**
 * Starts sshd with the tools, and `scripts` besides (name → body, on the sessions' PATH), and
 * writes SSH_SERVERS_FILE and ACCOUNTS_WORKFLOW_FILE for it.
 */
export async function startAccountSite(scripts: Record<string, string> = {}): Promise<AccountSite> {
  const ssh = await startSshServer({ fixtures: { ...TOOL_SCRIPTS, ...scripts } });
  const dir = await mkdtemp(join(tmpdir(), "fleet-accounts-"));
  const state = join(ssh.root, "state");
  await mkdir(state, { recursive: true });
  await writeFile(join(state, "calls"), "");
  const servers = { box: sshServerEntry(ssh, await writeSshClientFiles(ssh, dir), { env: { FX_STATE: state } }) };
  await writeServersFile(join(dir, "servers.yaml"), servers);
  await writeFile(
    join(dir, "workflow.yaml"),
    `servers:
  exp1: { ssh: box, role: export, capacity: 20 }
  mig1: { ssh: box, role: migration, capacity: 10 }
  mig2: { ssh: box, role: migration, capacity: 10 }
  sync1: { ssh: box, role: sync, capacity: 20 }
steps:
  - name: export
    role: export
    command: fx-export {externalId} {name}
    timeout: 60s
    retry: { attempts: 2, backoff: [100ms] }
    errorPatterns: { permanent: ["mailbox not found"] }
  - name: migrate
    role: migration
    command: fx-mig-start {externalId}
    check: { command: "fx-mig-status {externalId}", every: 200ms, done: "^COMPLETED", failed: "^FAILED", timeout: 60s }
  - name: directory-sync
    role: sync
    command: fx-sync {externalId}
    timeout: 8s
    retry: { attempts: 2, backoff: [100ms] }
groupUpdate:
  role: sync
  group: migrating-tonight
  command: fx-group {group} {email}
templates:
  operator-summary:
    subject: "Batch {runDate}: {done} done, {failed} failed, {cancelled} cancelled"
    text: "{failures}"
`,
  );
  return {
    ssh,
    dir,
    state,
    env: { SSH_SERVERS_FILE: join(dir, "servers.yaml"), ACCOUNTS_WORKFLOW_FILE: join(dir, "workflow.yaml") },
    servers,
    stop: async () => {
      await ssh.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Writes `workflow` to workflow-<label>.yaml and opens a pipeline harness named `label` on the
 * site with that workflow and no notices, then `extraEnv`.
 */
export async function openSiteHarness(site: AccountSite, label: string, workflow: string, extraEnv: Record<string, string> = {}): Promise<PipelineHarness> {
  const file = join(site.dir, `workflow-${label}.yaml`);
  await writeFile(file, workflow);
  return createPipelineHarness(label, { ...site.env, ACCOUNTS_WORKFLOW_FILE: file, ACCOUNTS_NOTICE_POLICY: "none", ...extraEnv });
}

/** Runs the night's `accounts-prepare`, then `accounts-run`, for `runDate` (job ids `<name>-<label>`), each to its completion. */
export async function prepareAndRun(h: PipelineHarness, runDate: string, label: string): Promise<void> {
  for (const name of ["accounts-prepare", "accounts-run"] as const) {
    const job = await h.runtime.deps.jobs.enqueue(name, { runDate }, { jobId: `${name}-${label}` });
    const { state, job: done } = await finishedJob(h.runtime, "maintenance", job.id!, 60_000);
    if (state !== "completed") throw new Error(`${name} ${state}: ${done.failedReason}`);
  }
}

/** A second SSH entry for the site's sshd, with a known_hosts of its own: "another machine" a test can cut off. */
export interface SecondEntry {
  /** servers-<label>.yaml: the site's entries and this one. */
  serversFile: string;
  /** Swaps the entry's known_hosts for a host key the sshd does not have: its connections are refused at the handshake, nothing runs there. */
  refuse(): Promise<void>;
  /** Trusts the sshd's own host key again. */
  admit(): Promise<void>;
}

/** Adds the entry `name` (as `box`, but its own known_hosts) in servers-<label>.yaml. */
export async function addSecondEntry(site: AccountSite, name: string, label: string): Promise<SecondEntry> {
  const knownHostsFile = join(site.dir, `known_hosts_${name}`);
  const admit = () => writeFile(knownHostsFile, `${site.ssh.knownHostsLine}\n`);
  await admit();
  const otherKeyFile = join(site.dir, `other_host_key_${name}`);
  await promisify(execFile)("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", otherKeyFile]);
  const otherKey = (await readFile(`${otherKeyFile}.pub`, "utf8")).trim().split(/\s+/).slice(0, 2).join(" ");
  const wrongKnownHosts = `${site.ssh.knownHostsLine.split(" ")[0]} ${otherKey}\n`;
  const serversFile = await writeServersFile(join(site.dir, `servers-${label}.yaml`), { ...site.servers, [name]: { ...site.servers.box!, knownHostsFile } });
  return { serversFile, refuse: () => writeFile(knownHostsFile, wrongKnownHosts), admit };
}
