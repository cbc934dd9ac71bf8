import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { readFileSync, statSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "@fleet/core/logger";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";

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

describe("configuration files: stat first, read only when needed", () => {
  let reads: string[];
  const readFile = (file: string) => {
    reads.push(file);
    return readFileSync(file);
  };
  beforeEach(() => {
    reads = [];
  });
  /** Reads made by `look`, and what it returned. */
  const counted = <T>(look: () => T): [T, string[]] => {
    const before = reads.length;
    const result = look();
    return [result, reads.slice(before)];
  };

  it("files older than the racy margin are not read again while their stat is unchanged", async () => {
    await sleep(120); // past the 50 ms margin: the files were written by beforeEach
    const files = new ConfigFiles({ serversFile: servers, workflowFile: workflow, log: silent, checkEveryMs: 0, racyMarginMs: 50, readFile });
    expect([...reads].sort()).toEqual([join(dir, "pw"), servers, workflow].sort());
    for (let i = 0; i < 3; i++) expect(counted(() => files.refresh())).toEqual([false, []]);
    expect(counted(() => stepOf(files))).toEqual(["first", []]);
  });

  it("an edit of the same size, with the old mtime put back, is seen at the next look", async () => {
    const mtime = 1_700_000_000; // whole seconds: utimes keeps them exactly
    utimesSync(workflow, mtime, mtime);
    await sleep(120);
    const files = new ConfigFiles({ serversFile: servers, workflowFile: workflow, log: silent, checkEveryMs: 0, racyMarginMs: 50, readFile });
    expect(counted(() => files.refresh())).toEqual([false, []]);
    const before = statSync(workflow, { bigint: true });
    writeFileSync(workflow, wf("secnd"));
    utimesSync(workflow, mtime, mtime); // only ctime tells the edit apart
    const after = statSync(workflow, { bigint: true });
    expect([after.ino, after.size, after.mtimeNs]).toEqual([before.ino, before.size, before.mtimeNs]);
    const [applied, read] = counted(() => files.refresh());
    expect(applied).toBe(true);
    expect(read).toContain(workflow);
    expect(stepOf(files)).toBe("secnd");
  });

  it("a removed file counts as changed, and the refusal is reported once", async () => {
    await sleep(120);
    const rejected: string[] = [];
    const files = new ConfigFiles({ serversFile: servers, workflowFile: workflow, log: silent, checkEveryMs: 0, racyMarginMs: 50, readFile, onRejected: (m) => rejected.push(m) });
    unlinkSync(join(dir, "pw"));
    expect(files.refresh()).toBe(false);
    expect(files.refresh()).toBe(false);
    expect(rejected).toEqual([expect.stringContaining("ENOENT")]);
    expect(stepOf(files)).toBe("first");
  });

  it("a file read while racy is read again at each look until it is read with an old ctime, then no more", async () => {
    // Wide enough that the constructor and two looks fall within it on a loaded machine.
    const margin = 2_000;
    writeFileSync(workflow, wf("again")); // written now: racy when the constructor reads it
    const writtenAt = Date.now();
    const files = new ConfigFiles({ serversFile: servers, workflowFile: workflow, log: silent, checkEveryMs: 0, racyMarginMs: margin, readFile });
    const stat = statSync(workflow, { bigint: true });
    // Same stat, yet read again: a rewrite within the same clock tick would keep it.
    expect(counted(() => files.refresh())).toEqual([false, expect.arrayContaining([workflow])]);
    expect(counted(() => files.refresh())).toEqual([false, expect.arrayContaining([workflow])]);
    await sleep(writtenAt + margin + 100 - Date.now());
    // The last read was racy (within the margin of the write); this one is not, and vouches for it.
    expect(counted(() => files.refresh())).toEqual([false, expect.arrayContaining([workflow])]);
    expect(counted(() => files.refresh())).toEqual([false, []]);
    expect(counted(() => files.refresh())).toEqual([false, []]);
    expect(statSync(workflow, { bigint: true })).toEqual(stat);
    expect(stepOf(files)).toBe("again");
  });

  it("every file is read again once rehashEveryMs has passed, whatever the stats say", async () => {
    await sleep(120);
    const files = new ConfigFiles({ serversFile: servers, workflowFile: workflow, log: silent, checkEveryMs: 0, racyMarginMs: 50, rehashEveryMs: 1_500, readFile });
    expect(counted(() => files.refresh())).toEqual([false, []]);
    await sleep(1_600);
    const [applied, read] = counted(() => files.refresh());
    expect(applied).toBe(false);
    expect(read.sort()).toEqual([join(dir, "pw"), servers, workflow].sort());
    expect(counted(() => files.refresh())).toEqual([false, []]);
  });

  it("a file named by several servers is read once per load", async () => {
    await writeFile(servers, `servers:\n${["a", "b", "c"].map((n) => `  ${n}: { host: 127.0.0.1, user: u, passwordFile: ${join(dir, "pw")}, fingerprint: "SHA256:${"A".repeat(43)}" }\n`).join("")}`);
    await writeFile(workflow, wf("first").replace("ssh: box", "ssh: a"));
    const files = new ConfigFiles({ serversFile: servers, workflowFile: workflow, log: silent, checkEveryMs: 0, readFile });
    expect(reads.filter((f) => f === join(dir, "pw"))).toHaveLength(1);
    expect([...files.current().servers.keys()]).toEqual(["a", "b", "c"]);
  });
});
