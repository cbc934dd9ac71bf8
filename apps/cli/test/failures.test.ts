import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createPipelineHarness, fileSummary, waitFor } from "../../../packages/jobs/test/pipelineHarness";
import type { PipelineHarness } from "../../../packages/jobs/test/pipelineHarness";
import { fleet, fleetJson } from "./runFleet";

/**
 * A run with missing source files, then what an operator does about it with the compiled CLI:
 * `failures` lists them (paths as written, each example with its own message), `retry
 * --category` re-queues only the chosen ones (permanent ones only when asked), `kill` gives
 * files up, and `status --watch` on the finished run exits 1 saying how many failed.
 */
const ODD = "odd/résumé ü 日本.txt";

describe("fleet migrate failures | retry | kill", () => {
  let h: PipelineHarness;
  let env: Record<string, string>;

  beforeAll(async () => {
    h = await createPipelineHarness("cli-failures", { BATCH_SIZE: "10" });
    env = { ...h.env, LOG_LEVEL: "warn" };
    await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 30, missing: new Set([3, 14, 25, 29]), key: (i) => (i === 29 ? ODD : `dir${i % 3}/file-${i}.bin`) });
    const runner = await h.startRunner({ queues: ["migration", "maintenance"] });
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await waitFor(async () => (await fileSummary(h.runtime)).withoutOutcome === 0, 30_000, "the migration to finish");
    await waitFor(async () => (await h.runtime.db.query(`SELECT 1 FROM migration_ranges WHERE status <> 'COMPLETE'`)).rowCount === 0 || undefined, 10_000, "ranges complete");
    await runner.stop(1_000);
    // One failure of another kind, retryable, to choose between categories.
    await h.runtime.db.query(`UPDATE migration_files SET error_category = 'network', error_message = 'connection reset by peer' WHERE file_id = (SELECT id FROM source_files WHERE uri = 'dir2/file-14.bin')`);
  }, 90_000);
  afterAll(() => h?.close());

  it("lists failed files with path, category, message, attempts and last try, and a summary per category", async () => {
    const r = await fleetJson(env, ["migrate", "failures"]);
    expect(r.total).toBe(4);
    expect(r.files.map((f: { path: string; category: string; state: string; attempts: number }) => [f.path, f.category, f.state, f.attempts]).sort()).toEqual([
      ["dir0/file-3.bin", "not-found", "failed", 1],
      ["dir1/file-25.bin", "not-found", "failed", 1],
      ["dir2/file-14.bin", "network", "failed", 1],
      [ODD, "not-found", "failed", 1],
    ]);
    // The example is one file, with that file's own message.
    expect(r.summary.map((c: { category: string; files: number; retryable: boolean }) => [c.category, c.files, c.retryable])).toEqual([
      ["not-found", 3, false],
      ["network", 1, true],
    ]);
    const notFound = r.summary[0] as { example: { path: string; message: string } };
    expect(notFound.example.message).toContain(`open ${JSON.stringify(notFound.example.path)}: ENOENT`);
    expect(r.summary[1].example).toMatchObject({ path: "dir2/file-14.bin", message: "connection reset by peer" });

    const text = await fleet(env, ["migrate", "failures", "--category", "not-found", "--limit", "2"]);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/not-found\s+3\s+permanent\s+e\.g\. /);
    expect(text.out).toMatch(/\(1–2 of 3; --limit \/ --offset for more\)/);
    expect((await fleetJson(env, ["migrate", "failures", "--text", "RÉSUMÉ"])).files.map((f: { path: string }) => f.path)).toEqual([ODD]);
    expect((await fleetJson(env, ["migrate", "failures", "--link", "file://", "--since", "1h"])).total).toBe(4);
    expect((await fleetJson(env, ["migrate", "failures", "--since", "2999-01-01T00:00Z"])).total).toBe(0);
    const bad = await fleet(env, ["migrate", "failures", "--since", "yesterday-ish"]);
    expect([bad.code, bad.err]).toEqual([2, expect.stringContaining("usage: fleet migrate failures [options]")]);
    // Nothing listed: says what was looked for.
    const noKilled = await fleet(env, ["migrate", "failures", "--state", "killed"]);
    expect([noKilled.code, noKilled.out]).toEqual([0, "no killed files\n"]);
    const noMatch = await fleet(env, ["migrate", "failures", "--text", "no-such-name", "--category", "network"]);
    expect(noMatch.out).toBe('no failed or retrying files matching --category network --text "no-such-name"\n');
  });

  it("names show decoded even when only the stored URI is left", async () => {
    const { rows } = await h.runtime.db.query(`DELETE FROM source_files WHERE uri = $1 RETURNING *`, [ODD]);
    try {
      const r = await fleetJson(env, ["migrate", "failures", "--category", "not-found"]);
      const odd = r.files.find((f: { path: string }) => f.path.includes("résumé"));
      expect(odd.path).toBe(`file://${h.sourceDir}/${ODD}`);
      expect(odd.oldUri).toContain("r%C3%A9sum%C3%A9");
    } finally {
      await h.runtime.db.query(`INSERT INTO source_files SELECT * FROM json_populate_record(NULL::source_files, $1)`, [JSON.stringify(rows[0])]);
    }
  });

  it("retry --category re-queues only that category; permanent ones only with --include-permanent", async () => {
    const refused = await fleet(env, ["migrate", "retry", "--category", "not-found"]);
    expect(refused.code).toBe(1);
    expect(refused.out).toContain("nothing re-queued");
    expect(refused.out).toContain("left alone, permanent: not-found 3 — fix the cause, then add --include-permanent");

    const network = await fleetJson(env, ["migrate", "retry", "--category", "network"]);
    expect(network).toMatchObject({ requested: { network: 1 }, files: 1, skippedPermanent: {} });
    const marked = await h.runtime.db.query(`SELECT m.error_category FROM migration_files m WHERE m.retry_requested_at IS NOT NULL`);
    expect(marked.rows).toEqual([{ error_category: "network" }]);
    // Recorded in the operation history as the operator's, and the job takes only requested files.
    const op = await h.runtime.db.query(`SELECT name, submitted_by, data FROM operations WHERE id = $1`, [network.job]);
    expect(op.rows[0]).toMatchObject({ name: "retry-failed", submitted_by: expect.stringMatching(/^cli:/), data: { requestedOnly: true, note: expect.stringContaining("network 1") } });

    const all = await fleet(env, ["migrate", "retry", "--category", "not-found", "--include-permanent"]);
    expect(all.code).toBe(0);
    expect(all.out).toMatch(/^re-queued 3 files \(not-found 3\) for retry-failed \(operation [0-9a-z]+-[0-9a-f]{10}\)/);
    expect((await h.runtime.db.query(`SELECT count(*)::int AS n FROM migration_files WHERE retry_requested_at IS NOT NULL`)).rows[0].n).toBe(4);

    // Nothing to retry is no error for a script: a category with no failed file; a --file that
    // is not failed is (a typo).
    const noTimeouts = await fleet(env, ["migrate", "retry", "--category", "timeout"]);
    expect([noTimeouts.code, noTimeouts.out]).toEqual([0, "nothing re-queued: no failed file matches\n"]);
    expect((await fleet(env, ["migrate", "retry", "--file", "999999"])).code).toBe(1);
    const unknown = await fleetJson(env, ["migrate", "failures", "--state", "failed", "--limit", "10"]);
    expect(unknown.files.every((f: { retryRequested: boolean }) => f.retryRequested)).toBe(true);
    const bogus = await fleet(env, ["migrate", "retry", "--file", "abc"]);
    expect([bogus.code, bogus.err]).toEqual([2, expect.stringContaining("usage: fleet migrate retry [options]")]);
  });

  it("retry runs take the requested files (a missing file fails again, its attempts recorded)", async () => {
    const runner = await h.startRunner({ queues: ["migration"] });
    await waitFor(async () => (await h.runtime.db.query(`SELECT 1 FROM migration_files WHERE retry_requested_at IS NOT NULL OR status = 'RETRYING'`)).rowCount === 0 || undefined, 20_000, "the requested retries");
    await runner.stop(1_000);
    const { rows } = await h.runtime.db.query(`SELECT retry_count, status FROM migration_files WHERE status <> 'SUCCESS' ORDER BY file_id`);
    expect(rows).toEqual([
      { retry_count: 1, status: "FAIL" },
      { retry_count: 1, status: "FAIL" },
      { retry_count: 1, status: "FAIL" },
      { retry_count: 1, status: "FAIL" },
    ]);
    const attempts = await h.runtime.db.query(`SELECT count(*)::int AS n FROM migration_file_attempts`);
    expect(attempts.rows[0].n).toBe(8); // each: the first failure and the retry's
  });

  it("kill gives files up: KILLED, never retried, listed as killed; status --watch on the ended run exits 1", async () => {
    const usage = await fleet(env, ["migrate", "kill"]);
    expect([usage.code, usage.err]).toEqual([2, expect.stringContaining("give exactly one of --file (repeatable), --owner or --prefix\nusage: fleet migrate kill [options]")]);
    const bogus = await fleet(env, ["migrate", "failures", "--category", "bogus"]);
    expect([bogus.code, bogus.err]).toEqual([2, expect.stringContaining('unknown category "bogus"; the categories are network, timeout,')]);
    // A selection that names nothing is an error (a typo in a script), as for retry.
    const typo = await fleet(env, ["migrate", "kill", "--file", "999999"]);
    expect([typo.code, typo.out]).toEqual([1, expect.stringMatching(/^no file matches --file .*: nothing killed\nfile 999999: no such file in the inventory/)]);
    const nothing = await fleet(env, ["migrate", "kill", "--prefix", "no-such-dir/"]);
    expect([nothing.code, nothing.out]).toEqual([1, expect.stringMatching(/^no file matches --prefix "no-such-dir\/"/)]);
    const killed = await fleetJson(env, ["migrate", "kill", "--prefix", "dir1/", "--reason", "gone for good"]);
    expect(killed).toMatchObject({ killed: 1, neverAttempted: 0, alreadySucceeded: 9 });
    const list = await fleetJson(env, ["migrate", "failures", "--state", "killed"]);
    expect(list.files.map((f: { path: string; state: string; message: string }) => [f.path, f.state, f.message.replace(/cli:\w+/, "cli:U")])).toEqual([
      ["dir1/file-25.bin", "killed", expect.stringMatching(/^killed by cli:U: gone for good \(was not-found: /)],
    ]);
    // One file's attempts, as the dashboard's file page shows them.
    const attempts = await fleetJson(env, ["migrate", "attempts", String(list.files[0].fileId)]);
    expect(attempts.file).toMatchObject({ fileId: list.files[0].fileId, state: "killed", path: "dir1/file-25.bin" });
    // Its failed tries first, the kill last.
    expect(attempts.attempts[0]).toMatchObject({ status: "FAIL", category: "not-found" });
    expect(attempts.attempts.at(-1)).toMatchObject({ status: "KILLED", category: "killed" });
    const none = await fleet(env, ["migrate", "attempts", "999999"]);
    expect([none.code, none.err]).toEqual([1, expect.stringContaining("file 999999 is not failed, retrying or killed")]);
    // Only permanent failures are left: a bare retry has nothing to do, and says why (exit 0).
    const bare = await fleet(env, ["migrate", "retry"]);
    expect([bare.code, bare.out]).toEqual([0, expect.stringMatching(/^nothing re-queued: every matching file failed for a permanent reason\nleft alone, permanent: not-found \d+ /)]);
    const retried = await fleet(env, ["migrate", "retry", "--file", String(list.files[0].fileId), "--include-permanent"]);
    expect([retried.code, retried.out]).toEqual([1, `nothing re-queued: no failed file matches\nfile ${list.files[0].fileId}: not failed (killed), not re-queued\n`]);

    const watch = await fleet(env, ["migrate", "status", "--watch"]);
    expect(watch.code).toBe(1);
    expect(watch.err).toMatch(/the run ended with 3 failed files/);
    expect(watch.err).toMatch(/^30\/30 files \(100\.0%\), 3 failed, 0 retrying, [\d.]+ files\/s [\d.]+ \S+\/s, elapsed \d+s, eta done$/m);
    const status = await fleetJson(env, ["migrate", "status"]);
    expect(status.numbers).toMatchObject({ state: "done", failed: 3, killed: 1, retrying: 0 });
    // file-14's retry found it missing too: not-found now.
    expect(status.failures.map((c: { category: string; files: number }) => [c.category, c.files])).toEqual([["not-found", 3]]);
  });
});
