import { execFileSync } from "node:child_process";
import { join } from "node:path";

const dist = join(__dirname, "..", "dist");

/** Loads `module` in a fresh node process and returns what it did: modules loaded, job names, contracts. */
function load(module: string): { modules: string[]; names: string[]; contractKeys: string[][] } {
  const script = `
    const m = require(${JSON.stringify(join(dist, module))});
    const c = require(${JSON.stringify(join(dist, "contracts.js"))});
    process.stdout.write(JSON.stringify({
      modules: Object.keys(require.cache),
      names: c.JOB_NAMES,
      contractKeys: c.JOB_NAMES.map((n) => Object.keys(c.jobContracts[n]).sort()),
    }));`;
  return JSON.parse(execFileSync(process.execPath, ["-e", script], { encoding: "utf8" }));
}

const HEAVY = ["node_modules/ssh2/", "node_modules/nodemailer/", "node_modules/@aws-sdk/", "node_modules/@smithy/", "node_modules/@prisma/"];

// Producers (scheduler, dashboard, CLI) import contracts.ts, which reads every processor file
// for its contract: that must not pull in what only handlers use (SSH, SMTP, S3 SDK, Prisma).
describe("the contract map", () => {
  it("loads every processor's contract and none of what their handlers use", () => {
    const { modules, names, contractKeys } = load("contracts.js");
    expect(HEAVY.filter((lib) => modules.some((m) => m.includes(lib)))).toEqual([]);
    expect(names).toContain("checksum-audit");
    expect(new Set(names).size).toBe(names.length);
    // Producers get contracts, not handlers.
    for (const keys of contractKeys) expect(keys).not.toContain("handle");
  });

  it("is what the worker's catalogue runs: the same names, each with a handler", () => {
    const { names } = load("contracts.js");
    const script = `const { buildFleetCatalogue } = require(${JSON.stringify(join(dist, "catalogue.js"))});
      const cat = buildFleetCatalogue();
      process.stdout.write(JSON.stringify(cat.names().map((n) => [n, typeof cat.get(n).handle])));`;
    const handlers: Array<[string, string]> = JSON.parse(execFileSync(process.execPath, ["-e", script], { encoding: "utf8" }));
    expect(handlers).toEqual(names.map((n) => [n, "function"]));
  });
});
