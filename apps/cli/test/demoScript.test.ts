import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const REPO = join(__dirname, "..", "..", "..");

type Exit = { code: number; stdout: string; stderr: string };
const exitOf = (p: Promise<{ stdout: string; stderr: string }>): Promise<Exit> =>
  p.then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

/**
 * `npm run demo` (scripts/demo.sh): its build step. The real script, run by bash in a project of
 * its shape (installed, a `build` script of our making, a CLI that prints what it was given), so
 * that a build that succeeds or fails is a real npm run, in seconds: the repository's own build
 * takes minutes and rewrites the dist other tests run. demo.test.ts covers `fleet demo` itself.
 */
describe("scripts/demo.sh: the build step", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "fleet-demo-script-"));
    await mkdir(join(dir, "scripts"));
    await copyFile(join(REPO, "scripts", "demo.sh"), join(dir, "scripts", "demo.sh"));
    await mkdir(join(dir, "apps", "cli", "dist"), { recursive: true });
    await writeFile(join(dir, "apps", "cli", "dist", "main.js"), "console.log('cli ' + JSON.stringify(process.argv.slice(2)));\n");
    // Installed, and after the lock: no install.
    await writeFile(join(dir, "package-lock.json"), "{}\n");
    await mkdir(join(dir, "node_modules"));
    await writeFile(join(dir, "node_modules", ".package-lock.json"), "{}\n");
    const past = new Date(Date.now() - 60_000);
    await utimes(join(dir, "package-lock.json"), past, past);
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const withBuild = (build: string) => writeFile(join(dir, "package.json"), JSON.stringify({ name: "demo-shape", private: true, scripts: { build } }));
  const demo = (...args: string[]) => exitOf(run("bash", [join(dir, "scripts", "demo.sh"), ...args], { env: { ...process.env, TMPDIR: dir }, timeout: 60_000 }));

  it("a build that succeeds: its output kept out of the demo's, a dot every 5 s, then the demo with its arguments", async () => {
    // What the build printed between the demo's lines before (found by a walk): Prisma's generator.
    await withBuild(`node -e "console.log('Prisma schema loaded from prisma/schema.prisma'); console.error('turbo: 11 tasks'); setTimeout(() => {}, 6500)"`);
    const r = await demo("--files", "10", "--workers", "2");
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toMatch(/^building \(a minute or two on a fresh clone, seconds after that\)\.+ built in \d+ s\ncli \["demo","--files","10","--workers","2"\]\n$/);
    expect(r.stdout).not.toContain("Prisma");
    // Its log is removed once the build succeeded.
    expect((await readdir(dir)).filter((n) => n.startsWith("fleet-demo-build."))).toEqual([]);
  }, 60_000);

  it("a build that fails: the end of its output and where the rest is, exit 1, and no demo", async () => {
    await withBuild(`node -e "for (let i = 1; i <= 100; i++) console.log('build line ' + i); process.exit(2)"`);
    const r = await demo("--files", "10");
    expect(r.code).toBe(1);
    expect(r.stdout).not.toContain("cli [");
    // The last 40 lines, not the rest.
    expect(r.stderr).toContain("build line 100");
    expect(r.stderr).toContain("build line 61");
    expect(r.stderr).not.toContain("build line 60\n");
    const where = /the build failed \(its whole output: (.+)\)/.exec(r.stderr)?.[1];
    expect(where).toBeDefined();
    expect(await readFile(where!, "utf8")).toContain("build line 1\n");
  }, 60_000);
});
