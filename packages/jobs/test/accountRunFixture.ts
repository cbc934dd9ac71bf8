import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";

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
}

/** Starts sshd with the tools and writes SSH_SERVERS_FILE and ACCOUNTS_WORKFLOW_FILE for it. */
export async function startAccountSite(): Promise<AccountSite> {
  const ssh = await startSshServer({ fixtures: TOOL_SCRIPTS });
  const dir = await mkdtemp(join(tmpdir(), "fleet-accounts-"));
  const state = join(ssh.root, "state");
  await mkdir(state, { recursive: true });
  await writeFile(join(state, "calls"), "");
  await writeFile(join(dir, "key"), ssh.privateKey, { mode: 0o600 });
  await writeFile(join(dir, "known_hosts"), `${ssh.knownHostsLine}\n`);
  await writeFile(
    join(dir, "servers.yaml"),
    `servers:
  box:
    host: ${ssh.host}
    port: ${ssh.port}
    user: ${ssh.user}
    keyFile: ${join(dir, "key")}
    knownHostsFile: ${join(dir, "known_hosts")}
    env:
      FX_STATE: ${state}
`,
  );
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
  return { ssh, dir, state, env: { SSH_SERVERS_FILE: join(dir, "servers.yaml"), ACCOUNTS_WORKFLOW_FILE: join(dir, "workflow.yaml") } };
}
