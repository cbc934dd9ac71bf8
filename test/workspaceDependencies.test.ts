import { existsSync, readFileSync, readdirSync } from "node:fs";
import { builtinModules } from "node:module";
import { join, relative, resolve } from "node:path";
import ts from "typescript";

/**
 * Every workspace declares what its code imports, and nothing else:
 * - product code (src/, not *.test.ts) imports only packages in its package.json `dependencies`,
 *   and every dependency is imported by product code (a few loaded by name, not by import, are
 *   listed below with the reason);
 * - tests (src/**\/*.test.ts, test/) import only dependencies, devDependencies, the root's
 *   devDependencies (jest, fast-check, …) — never an undeclared workspace;
 * - tsconfig.json `references` are exactly the workspaces product code imports (tests are not
 *   compiled by `tsc -b`), so the build order matches the import graph.
 * Imports are read with TypeScript's own pre-processor (static, `export … from`, `import()`,
 * `require()`), type-only imports included: a type needs its package to build.
 */
const ROOT = resolve(__dirname, "..");

/** Declared dependencies that no import names, and why they are needed. */
const LOADED_WITHOUT_IMPORT: Record<string, Record<string, string>> = {
  "@fleet/core": { "pino-pretty": "pino loads it by name as the pretty-print transport (LOG_PRETTY)" },
  "@fleet/db": { "@prisma/client": "the generated client (src/generated, made by `npm run generate`, not in git) imports it" },
  "@fleet/jobs": { "@types/nodemailer": "types of nodemailer, which the jobs import" },
  "@fleet/dashboard": {
    "@fastify/static": "pins the version @bull-board/fastify serves its UI with (later ones are ESM-only)",
    "@fontsource/ibm-plex-mono": "font files served from the package folder, found with require.resolve (boardFonts.ts)",
    "@fontsource/ibm-plex-sans": "font files served from the package folder, found with require.resolve (boardFonts.ts)",
  },
};

interface Workspace {
  dir: string;
  name: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  references: string[];
}

function readJson(path: string): any {
  // tsconfig files may carry comments or trailing commas: parse them as TypeScript does.
  const parsed = ts.parseConfigFileTextToJson(path, readFileSync(path, "utf8"));
  if (parsed.error) throw new Error(`${path}: ${ts.flattenDiagnosticMessageText(parsed.error.messageText, "\n")}`);
  return parsed.config;
}

function workspaces(): Workspace[] {
  const root = readJson(join(ROOT, "package.json"));
  const dirs: string[] = [];
  for (const pattern of root.workspaces as string[]) {
    const parent = pattern.replace(/\/\*$/, "");
    for (const entry of readdirSync(join(ROOT, parent), { withFileTypes: true })) {
      if (entry.isDirectory() && existsSync(join(ROOT, parent, entry.name, "package.json"))) dirs.push(join(parent, entry.name));
    }
  }
  return dirs.sort().map((dir) => {
    const pkg = readJson(join(ROOT, dir, "package.json"));
    const tsconfig = readJson(join(ROOT, dir, "tsconfig.json"));
    return {
      dir,
      name: pkg.name,
      dependencies: pkg.dependencies ?? {},
      devDependencies: pkg.devDependencies ?? {},
      references: (tsconfig.references ?? []).map((r: { path: string }) => relative(ROOT, resolve(ROOT, dir, r.path))),
    };
  });
}

function sourceFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === "node_modules" || entry.name === "dist" || entry.name === "generated") continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (/\.(ts|tsx|mts|cts)$/.test(entry.name) && !entry.name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

const BUILTINS = new Set(builtinModules);

/** The package an import specifier names, or undefined for relative paths and Node built-ins. */
function packageOf(specifier: string): string | undefined {
  if (specifier.startsWith(".") || specifier.startsWith("/")) return undefined;
  if (specifier.startsWith("node:") || BUILTINS.has(specifier) || BUILTINS.has(specifier.split("/")[0]!)) return undefined;
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
}

/** package → files that import it */
function importsOf(files: string[]): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    const info = ts.preProcessFile(text, true, true);
    // require.resolve("x") loads a package by name too (a child process's entry, a file it serves).
    const resolved = [...text.matchAll(/require\.resolve\(\s*["']([^"']+)["']/g)].map((m) => m[1]!);
    for (const specifier of [...info.importedFiles.map((ref) => ref.fileName), ...resolved]) {
      const pkg = packageOf(specifier);
      if (!pkg) continue;
      const list = found.get(pkg) ?? [];
      if (!list.includes(relative(ROOT, file))) list.push(relative(ROOT, file));
      found.set(pkg, list);
    }
  }
  return found;
}

const isTest = (file: string) => file.endsWith(".test.ts") || file.includes("/test/");

const all = workspaces();
const byName = new Map(all.map((w) => [w.name, w]));
/** The workspaces `name` depends on, directly or not (dependencies and devDependencies). */
function closureOf(name: string, seen = new Set<string>()): Set<string> {
  const ws = byName.get(name);
  for (const dep of Object.keys({ ...ws?.dependencies, ...ws?.devDependencies })) {
    if (byName.has(dep) && !seen.has(dep)) {
      seen.add(dep);
      closureOf(dep, seen);
    }
  }
  return seen;
}
const rootDevDependencies: Record<string, string> = readJson(join(ROOT, "package.json")).devDependencies ?? {};

describe("workspace dependencies match imports", () => {
  it("finds the workspaces and reads their imports", () => {
    expect(all.map((w) => w.dir)).toEqual(expect.arrayContaining(["packages/core", "packages/storage", "packages/remote", "apps/worker", "apps/bench"]));
    expect(packageOf("@fleet/storage/s3/s3Storage")).toBe("@fleet/storage");
    expect(packageOf("ssh2")).toBe("ssh2");
    expect(packageOf("@smithy/core/checksum")).toBe("@smithy/core");
    expect(packageOf("node:fs")).toBeUndefined();
    expect(packageOf("fs/promises")).toBeUndefined();
    expect(packageOf("./keys")).toBeUndefined();
  });

  describe.each(all.map((w) => [w.dir, w] as const))("%s", (_dir, ws) => {
    const files = [...sourceFiles(join(ROOT, ws.dir, "src")), ...sourceFiles(join(ROOT, ws.dir, "test"))];
    const product = importsOf(files.filter((f) => !isTest(relative(ROOT, f))));
    const tests = importsOf(files.filter((f) => isTest(relative(ROOT, f))));
    product.delete(ws.name);
    tests.delete(ws.name);

    it("declares in dependencies every package its product code imports", () => {
      const undeclared = [...product].filter(([pkg]) => !(pkg in ws.dependencies)).map(([pkg, where]) => `${pkg} (imported by ${where.join(", ")})`);
      expect(undeclared).toEqual([]);
    });

    it("imports every dependency it declares", () => {
      const reasons = LOADED_WITHOUT_IMPORT[ws.name] ?? {};
      const unused = Object.keys(ws.dependencies).filter((pkg) => !product.has(pkg) && !(pkg in reasons));
      expect(unused).toEqual([]);
      // A listed exception that became an import (or stopped being declared) is taken off the list.
      for (const pkg of Object.keys(reasons)) {
        expect({ pkg, declared: pkg in ws.dependencies, imported: product.has(pkg) }).toEqual({ pkg, declared: true, imported: false });
      }
    });

    it("declares every package its tests import (workspaces in its own package.json)", () => {
      // A workspace that itself depends on this one (@fleet/testing for core and db) cannot be
      // declared without a cycle in the build graph: its tests use it as they use jest.
      const declarable = (pkg: string) => byName.has(pkg) && !closureOf(pkg).has(ws.name);
      const undeclared = [...tests]
        .filter(([pkg]) => !(pkg in ws.dependencies) && !(pkg in ws.devDependencies) && (declarable(pkg) || (!byName.has(pkg) && !(pkg in rootDevDependencies))))
        .map(([pkg, where]) => `${pkg} (imported by ${where.join(", ")})`);
      expect(undeclared).toEqual([]);
    });

    it("has a tsconfig reference for each workspace its product code imports, and no other", () => {
      const imported = [...product.keys()].filter((pkg) => byName.has(pkg)).map((pkg) => byName.get(pkg)!.dir).sort();
      expect([...ws.references].sort()).toEqual(imported);
    });

    it("declares workspaces that exist", () => {
      const missing = Object.keys({ ...ws.dependencies, ...ws.devDependencies }).filter((pkg) => pkg.startsWith("@fleet/") && !byName.has(pkg));
      expect(missing).toEqual([]);
    });
  });

  it("lists every workspace in the root tsconfig.json, tsconfig.depcruise.json and the Dockerfile's dependency layer", () => {
    const rootRefs = (readJson(join(ROOT, "tsconfig.json")).references as { path: string }[]).map((r) => r.path).sort();
    expect(rootRefs).toEqual(all.map((w) => w.dir).sort());
    const depcruisePaths = Object.keys(readJson(join(ROOT, "tsconfig.depcruise.json")).compilerOptions.paths).sort();
    expect(depcruisePaths).toEqual(all.map((w) => `${w.name}/*`).sort());
    const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8");
    for (const w of all) expect({ dir: w.dir, copied: dockerfile.includes(`COPY ${w.dir}/package.json ${w.dir}/`) }).toEqual({ dir: w.dir, copied: true });
  });

  it("ships no dev-only workspace in the image: the ones the four apps do not need are removed before the prune", () => {
    // What the image runs (its CMD choices) and every workspace those need at run time.
    const byName = new Map(all.map((w) => [w.name, w]));
    const needed = new Set<string>();
    const visit = (name: string) => {
      const w = byName.get(name);
      if (!w || needed.has(w.dir)) return;
      needed.add(w.dir);
      Object.keys(w.dependencies).forEach(visit);
    };
    ["@fleet/worker", "@fleet/scheduler", "@fleet/dashboard", "@fleet/cli"].forEach(visit);
    const devOnly = all.map((w) => w.dir).filter((dir) => !needed.has(dir));
    // npm prune --omit=dev keeps every workspace present and its dependencies (s3rver and
    // smtp-server through @fleet/testing, say): the dev-only ones must be gone first.
    expect(devOnly.sort()).toEqual(["apps/bench", "packages/testing"]);
    const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8");
    expect(dockerfile).toContain(`RUN npm run build && rm -rf ${devOnly.join(" ")} && npm prune --omit=dev`);
  });
});
