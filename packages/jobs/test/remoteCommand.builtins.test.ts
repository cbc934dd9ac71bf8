import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { writeSshServersFile } from "@fleet/testing/sshServersFile";
import { createPipelineHarness, finishedJob } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * docs/security.md promises that "no payload can name a URL, a path or a command line"
 * and that `remote-command` runs "one of its registered commands". The administrator below
 * registers ONE harmless command on nas1; a payload (anyone with submit:remote-command) still
 * must not run the builtins `mkdir-p` and `folder-size` with an arbitrary absolute path (it could).
 */
let ssh: SshServer;
let dir: string;
let serversFile: string;
let h: PipelineHarness;

beforeAll(async () => {
  ssh = await startSshServer({ fixtures: { "fleet-args": '#!/bin/sh\nfor a in "$@"; do printf "[%s]\\n" "$a"; done\n' } });
  dir = await mkdtemp(join(tmpdir(), "fleet-remote-builtins-"));
  // A "secret" file outside anything the administrator registered.
  await writeFile(join(dir, "private.bin"), Buffer.alloc(123_457));
  serversFile = await writeSshServersFile(ssh, dir, { nas1: { commands: { "echo-args": "fleet-args {first}" } } });
  h = await createPipelineHarness("remote-builtins", { SSH_SERVERS_FILE: serversFile });
  await h.startRunner({ queues: ["remote"] });
}, 60_000);

afterAll(async () => {
  await h?.close();
  await ssh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

it("refuses mkdir-p, a command nas1 never registered, with a payload-chosen absolute path", async () => {
  const target = join(dir, "created-by-a-payload", "deep");
  const job = await h.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "mkdir-p", values: { path: target } });
  const done = await finishedJob(h.runtime, "remote", job.id!);
  const created = await stat(target).then(() => true, () => false);
  expect({ state: done.state, created }).toEqual({ state: "failed", created: false });
});

it("refuses folder-size of an arbitrary path (disclosure of sizes/existence anywhere the SSH user can read)", async () => {
  const job = await h.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "folder-size", values: { path: join(dir, "private.bin") } });
  const done = await finishedJob(h.runtime, "remote", job.id!);
  expect(done.job.returnvalue?.value).not.toBe(123_457);
  expect(done.state).toBe("failed");
});
