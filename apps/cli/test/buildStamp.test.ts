import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const REPO = join(__dirname, "..", "..", "..");
const TSC = join(REPO, "node_modules", "typescript", "bin", "tsc");
const STAMP_SCRIPT = join(REPO, "scripts", "build-stamp.js");

type Exit = { code: number; stdout: string; stderr: string };
const exitOf = (p: Promise<{ stdout: string; stderr: string }>): Promise<Exit> =>
  p.then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

/** A failed build leaves no runnable mix: the failing package emits nothing and the stamp goes, so the apps refuse to start. */
describe("a failed build", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "fleet-build-stamp-"));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("emits nothing for a package with a type error (noEmitOnError) and removes the build stamp", async () => {
    // A package like ours: the repository's base config, built the way its build script does.
    const pkg = join(dir, "pkg");
    await mkdir(join(pkg, "src"), { recursive: true });
    await writeFile(join(pkg, "tsconfig.json"), JSON.stringify({ extends: join(REPO, "tsconfig.base.json"), compilerOptions: { rootDir: "src", outDir: "dist", types: [] }, include: ["src"] }));
    await writeFile(join(pkg, "src", "a.ts"), "export const version = 1;\n");
    const stamp = join(dir, "stamp.json");
    const build = () => exitOf(run("sh", ["-c", `node ${TSC} -b || node ${STAMP_SCRIPT} failed`], { cwd: pkg, env: { ...process.env, FLEET_BUILD_STAMP: stamp } }));
    expect((await build()).code).toBe(0);
    await run(process.execPath, [STAMP_SCRIPT, "write"], { env: { ...process.env, FLEET_BUILD_STAMP: stamp } });
    expect(await readFile(join(pkg, "dist", "a.js"), "utf8")).toContain("exports.version = 1");

    // The next edit changes a.ts and adds b.ts, and has a type error.
    await writeFile(join(pkg, "src", "a.ts"), "export const version = 2;\n");
    await writeFile(join(pkg, "src", "b.ts"), 'export const wrong: number = "not a number";\n');
    const failed = await build();
    expect(failed.code).toBe(1);
    expect(failed.stdout).toContain("error TS2322");
    expect(failed.stderr).toContain("the build stamp is removed");
    // Nothing of the failed build was written: the old dist stays whole, and no stamp.
    expect(await readFile(join(pkg, "dist", "a.js"), "utf8")).toContain("exports.version = 1");
    expect(existsSync(join(pkg, "dist", "b.js"))).toBe(false);
    expect(existsSync(stamp)).toBe(false);
  }, 120_000);

  it("the apps refuse to start without the stamp, and say what to do", async () => {
    const env = { ...process.env, FLEET_BUILD_STAMP: join(dir, "missing.json"), FLEET_ENV_FILE: "/nonexistent" };
    for (const main of ["apps/worker/dist/main.js", "apps/scheduler/dist/main.js", "apps/dashboard/dist/main.js", "apps/cli/dist/main.js"]) {
      const r = await exitOf(run(process.execPath, [join(REPO, main), "--help"], { env, timeout: 30_000 }));
      expect([main, r.code]).toEqual([main, 3]);
      expect(r.stderr).toMatch(/the last build did not complete .*Run `npm run build`/);
    }
    // With the stamp `npm run build` wrote, the same binary starts.
    const ok = await exitOf(run(process.execPath, [join(REPO, "apps/cli/dist/main.js"), "--help"], { env: { ...process.env, FLEET_ENV_FILE: "/nonexistent" } }));
    expect(ok.code).toBe(0);
  }, 120_000);
});
