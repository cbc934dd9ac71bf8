import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";

/**
 * The layering rules of .dependency-cruiser.js hold on the whole repository: no import cycles
 * between files, packages never import apps, storage adapters don't import each other (nor
 * the shared storage code an adapter), @fleet/remote stays below storage, no orphan modules,
 * no unresolvable or undeclared package imports. The only tolerated violations are the
 * known ones in .dependency-cruiser-known-violations.json: the type-only cycles of
 * packages/jobs through its handler catalogue, which go when the contract map lands (then this
 * test says to empty that file).
 */
const ROOT = resolve(__dirname, "..");
const DEPCRUISE = join(ROOT, "node_modules", ".bin", "depcruise");
const KNOWN = ".dependency-cruiser-known-violations.json";

interface Violation {
  type: string;
  from: string;
  to: string;
  rule: { name: string; severity: string };
  cycle?: { name: string }[];
}

function cruise(cwd: string, args: string[]): { violations: Violation[]; modules: number } {
  const run = spawnSync(DEPCRUISE, [...args, "--output-type", "json"], { cwd, encoding: "utf8", maxBuffer: 256 * 1024 * 1024 });
  if (run.error) throw run.error;
  let result: { summary: { violations: Violation[]; totalCruised: number } };
  try {
    result = JSON.parse(run.stdout);
  } catch {
    throw new Error(`depcruise gave no JSON (exit ${run.status}):\n${run.stderr}`);
  }
  return { violations: result.summary.violations, modules: result.summary.totalCruised };
}

const describeViolation = (v: Violation) =>
  `${v.rule.name}: ${v.from} → ${v.cycle ? v.cycle.map((c) => c.name).join(" → ") : v.to}`;

describe("layering (dependency-cruiser)", () => {
  it("finds no violation in apps/ and packages/ beyond the known ones", () => {
    const { violations, modules } = cruise(ROOT, ["apps", "packages", "--config", ".dependency-cruiser.js", "--ignore-known", KNOWN]);
    expect(modules).toBeGreaterThan(300);
    expect(violations.filter((v) => v.rule.severity !== "ignore").map(describeViolation)).toEqual([]);
  }, 300_000);

  it("knows only packages/jobs' type-only cycles through its catalogue, and each still occurs", () => {
    const known: Violation[] = JSON.parse(readFileSync(join(ROOT, KNOWN), "utf8"));
    // Anything else must be fixed, not added to the baseline.
    const unexpected = known.filter(
      (v) => v.rule.name !== "no-circular" || !v.from.startsWith("packages/jobs/src/") || !(v.cycle ?? []).some((c) => c.name === "packages/jobs/src/catalogue.ts"),
    );
    expect(unexpected.map(describeViolation)).toEqual([]);
    const { violations } = cruise(ROOT, ["packages/jobs", "--config", ".dependency-cruiser.js"]);
    const now = new Set(violations.map(describeViolation));
    const gone = known.map(describeViolation).filter((d) => !now.has(d));
    // When the contract map lands the cycles go: remove their entries from the baseline
    // (`npx depcruise apps packages --config .dependency-cruiser.js --output-type baseline > .dependency-cruiser-known-violations.json`).
    expect(gone).toEqual([]);
  }, 300_000);

  it("catches each kind of violation in a small tree made for it", () => {
    const dir = mkdtempSync(join(tmpdir(), "fleet-layering-"));
    try {
      const files: Record<string, string> = {
        "packages/storage/src/storage.ts": `export interface Storage { name: string }\n`,
        "packages/storage/src/createStorage.ts": `import { make } from "./s3/s3Storage";\nexport const create = () => make();\n`,
        "packages/storage/src/keys.ts": `import { localName } from "./local/localStorage";\nexport const key = localName;\n`,
        "packages/storage/src/local/localStorage.ts": `import type { Storage } from "../storage";\nexport const localName = "local";\nexport const local: Storage = { name: localName };\n`,
        "packages/storage/src/s3/s3Storage.ts": `import { localName } from "../local/localStorage";\nexport const make = () => localName;\n`,
        "packages/remote/src/ssh.ts": `import { key } from "../../storage/src/keys";\nexport const ssh = key;\n`,
        "packages/jobs/src/a.ts": `import { b } from "./b";\nimport { cli } from "../../../apps/cli/src/main";\nexport const a = () => b() + cli;\n`,
        "packages/jobs/src/b.ts": `import { a } from "./a";\nexport const b = (): string => String(a);\n`,
        "packages/jobs/src/lonely.ts": `export const nobody = 1;\n`,
        "apps/cli/src/main.ts": `import { create } from "../../../packages/storage/src/createStorage";\nimport { ssh } from "../../../packages/remote/src/ssh";\nexport const cli = String(create()) + ssh;\n`,
        "package.json": `{ "name": "fixture", "private": true }\n`,
        "tsconfig.json": `{ "compilerOptions": { "module": "commonjs", "strict": true } }\n`,
        ".dependency-cruiser.js":
          `const real = require(${JSON.stringify(join(ROOT, ".dependency-cruiser.js"))});\n` +
          `module.exports = { ...real, options: { ...real.options, tsConfig: { fileName: "tsconfig.json" } } };\n`,
      };
      for (const [path, text] of Object.entries(files)) {
        mkdirSync(dirname(join(dir, path)), { recursive: true });
        writeFileSync(join(dir, path), text);
      }
      const { violations } = cruise(dir, ["apps", "packages", "--config", ".dependency-cruiser.js"]);
      const found = violations.map(describeViolation).sort();
      expect(found).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/^no-circular: packages\/jobs\/src\/a\.ts/),
          "packages-not-to-apps: packages/jobs/src/a.ts → apps/cli/src/main.ts",
          "storage-adapters-apart: packages/storage/src/s3/s3Storage.ts → packages/storage/src/local/localStorage.ts",
          "storage-shared-not-to-adapters: packages/storage/src/keys.ts → packages/storage/src/local/localStorage.ts",
          "remote-not-to-storage: packages/remote/src/ssh.ts → packages/storage/src/keys.ts",
          "no-orphans: packages/jobs/src/lonely.ts → packages/jobs/src/lonely.ts",
        ]),
      );
      // createStorage may pick an adapter; an adapter may use the shared code.
      expect(found.filter((d) => d.includes("createStorage.ts →") || d.startsWith("storage-adapters-apart: packages/storage/src/local/"))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
