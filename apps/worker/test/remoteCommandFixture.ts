import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { writeSshServersFile } from "@fleet/testing/sshServersFile";
import { createWorkerFixture } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * What the remote-command fault tests share: a real sshd whose `fleet-export` script is the
 * test's, registered as server nas1 with the one command `export: fleet-export {project}`, and a
 * worker fixture on the `remote` queue with that servers file.
 */
export interface RemoteCommandSite {
  ssh: SshServer;
  /** A temp dir of the test's own (the servers file and its client files, the script's files). */
  dir: string;
  /** `dir`/runs.log, where the test's script records its runs. */
  runs: string;
  fx: WorkerFixture;
  /** The lines of runs.log so far (none before the first run). */
  runLines(): Promise<string[]>;
  /** The remote queue's job `id` once it is completed or failed (its state), after `timeoutMs` an error naming `what`. */
  finished(id: string, timeoutMs: number, what: string): Promise<string>;
  close(): Promise<void>;
}

export interface RemoteCommandSiteOptions {
  /** The body of `fleet-export`, given the site's dir and runs.log. */
  script: (dir: string, runs: string) => string;
  /** The command's timeout in the servers file. */
  timeout: string;
  /** sshd's ClientAliveInterval (see SshServerOptions). */
  clientAliveSeconds?: number;
  /** The worker fixture's env besides SSH_SERVERS_FILE and WORKER_QUEUES=remote. */
  env?: Record<string, string>;
}

/** Starts the site for the test labelled `label` (its temp dir is fleet-<label>-…). */
export async function openRemoteCommandSite(label: string, options: RemoteCommandSiteOptions): Promise<RemoteCommandSite> {
  const dir = await mkdtemp(join(tmpdir(), `fleet-${label}-`));
  const runs = join(dir, "runs.log");
  let ssh: SshServer | undefined;
  let fx: WorkerFixture | undefined;
  const close = async (): Promise<void> => {
    await fx?.close();
    await ssh?.stop();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    ssh = await startSshServer({ clientAliveSeconds: options.clientAliveSeconds, fixtures: { "fleet-export": options.script(dir, runs) } });
    const serversFile = await writeSshServersFile(ssh, dir, { nas1: { timeout: options.timeout, commands: { export: "fleet-export {project}" } } });
    fx = await createWorkerFixture(label, { SSH_SERVERS_FILE: serversFile, WORKER_QUEUES: "remote", ...options.env });
    await mkdir(fx.sourceDir, { recursive: true });
    await mkdir(fx.destDir, { recursive: true });
  } catch (err) {
    await close();
    throw err;
  }
  return siteOf(ssh, dir, runs, fx, close);
}

function siteOf(ssh: SshServer, dir: string, runs: string, fx: WorkerFixture, close: () => Promise<void>): RemoteCommandSite {
  return {
    ssh,
    dir,
    runs,
    fx,
    runLines: async () => (await readFile(runs, "utf8").catch(() => "")).trim().split("\n").filter(Boolean),
    finished: (id, timeoutMs, what) =>
      fx.waitFor(async () => {
        const state = await (await fx.runtime.deps.jobs.queue("remote").getJob(id))?.getState();
        return state === "completed" || state === "failed" ? state : undefined;
      }, timeoutMs, what),
    close,
  };
}
