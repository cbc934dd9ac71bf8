import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "@fleet/core/logger";
import { Writable } from "node:stream";

// Lets a test edit a file "while loading": the hook runs right after the real load returns.
let afterLoad: (() => void) | undefined;
jest.mock("../accounts/workflowFile", () => {
  const actual = jest.requireActual("../accounts/workflowFile");
  return {
    ...actual,
    loadWorkflowFile: (...args: unknown[]) => {
      const wf = actual.loadWorkflowFile(...args);
      const hook = afterLoad;
      afterLoad = undefined;
      hook?.();
      return wf;
    },
  };
});
import { ConfigFiles } from "./configFiles";

const silent = createLogger({ name: "t", LOG_LEVEL: "fatal", LOG_FORMAT: "json", destination: new Writable({ write: (_c, _e, cb) => cb() }) });

const wf = (step: string) =>
  `servers:\n  m1: { ssh: box, role: migration, capacity: 2 }\nsteps:\n  - { name: ${step}, role: migration, command: 'migrate {email}' }\n`;
const BAD = "servers: [this is not a workflow\n";

let dir: string;
let servers: string;
let workflow: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "fleet-config-"));
  await writeFile(join(dir, "pw"), "secret\n");
  servers = join(dir, "servers.yaml");
  await writeFile(servers, `servers:\n  box: { host: 127.0.0.1, user: u, passwordFile: ${join(dir, "pw")}, fingerprint: "SHA256:${"A".repeat(43)}" }\n`);
  workflow = join(dir, "workflow.yaml");
  await writeFile(workflow, wf("first"));
});
afterEach(async () => {
  afterLoad = undefined;
  await rm(dir, { recursive: true, force: true });
});

const stepOf = (files: ConfigFiles) => files.current().workflow!.steps.map((s) => s.name).join(",");

describe("configuration files followed by content", () => {
  it("an edit made while the worker loads at start is seen at the next look", async () => {
    afterLoad = () => writeFileSync(workflow, wf("second"));
    const files = new ConfigFiles({ serversFile: servers, workflowFile: workflow, log: silent, checkEveryMs: 0 });
    // The file now says "second"; the constructor's signature was taken after its load.
    expect(stepOf(files)).toBe("second");
  });

  it("an edit made while loading a reload that changed the set of files is seen at the next look", async () => {
    const files = new ConfigFiles({ serversFile: servers, workflowFile: workflow, log: silent, checkEveryMs: 0 });
    expect(stepOf(files)).toBe("first");
    // The servers file now names a known_hosts-less, password file elsewhere: another file set.
    await writeFile(join(dir, "pw2"), "secret2\n");
    await writeFile(servers, `servers:\n  box: { host: 127.0.0.1, user: u, passwordFile: ${join(dir, "pw2")}, fingerprint: "SHA256:${"A".repeat(43)}" }\n`);
    afterLoad = () => writeFileSync(workflow, wf("third"));
    expect(stepOf(files)).toBe("first"); // the reload ran; the edit came during it
    expect(stepOf(files)).toBe("third");
  });

  it("the same bad edit made again after a revert is reported again (onRejected)", async () => {
    const rejected: string[] = [];
    const files = new ConfigFiles({ serversFile: servers, workflowFile: workflow, log: silent, checkEveryMs: 0, onRejected: (m) => rejected.push(m) });
    await writeFile(workflow, BAD);
    expect(stepOf(files)).toBe("first");
    expect(rejected).toHaveLength(1);
    await writeFile(workflow, wf("first")); // operator reverts
    expect(stepOf(files)).toBe("first");
    await writeFile(workflow, BAD); // ...and tries the same edit again later
    expect(stepOf(files)).toBe("first");
    expect(rejected).toHaveLength(2);
  });

  it("a rejection message does not carry a secret file's contents", async () => {
    const rejected: string[] = [];
    const files = new ConfigFiles({ serversFile: servers, workflowFile: workflow, log: silent, checkEveryMs: 0, onRejected: (m) => rejected.push(m) });
    const key = join(dir, "key");
    await writeFile(key, "-----BEGIN OPENSSH PRIVATE KEY-----\nTOPSECRETMATERIAL\n-----END OPENSSH PRIVATE KEY-----\n");
    await writeFile(join(dir, "kh"), "TOPSECRETMATERIAL not a known_hosts line\n");
    await writeFile(servers, `servers:\n  box: { host: 127.0.0.1, user: u, keyFile: ${key}, knownHostsFile: ${join(dir, "kh")} }\n`);
    expect(stepOf(files)).toBe("first");
    expect(rejected.join("\n")).not.toContain("TOPSECRET");
  });
});
