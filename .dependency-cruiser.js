// The layering rules, enforced by test/layering.test.ts; `npm run layers` shows the same verdict.
// Adapters of packages/storage live in one folder each; the shared interface and helpers sit
// at the top of packages/storage/src.
//
// Known violations (.dependency-cruiser-known-violations.json, read with --ignore-known): none.
// The type-only cycles packages/jobs once had through its handler catalogue are gone: each
// processor file registers its contract type in FleetJobRegistry by declaration merging
// (jobRegistry.ts imports no processor), and processors.ts lists the processors one line each.
// test/layering.test.ts refuses any entry but such a cycle, and says so when an entry no longer occurs.
const ADAPTERS = "(local|s3|sftp|package|null)";
const TESTS = "([.]test[.]ts$|/test/)";

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "No import cycles between files, type-only imports included (they tangle the reading order as much as value imports).",
      from: {},
      to: { circular: true },
    },
    {
      name: "packages-not-to-apps",
      severity: "error",
      comment: "Packages are libraries: they never import an app (apps/*), product code or tests.",
      from: { path: "^packages/" },
      to: { path: "^apps/" },
    },
    {
      name: "storage-adapters-apart",
      severity: "error",
      comment: "A storage adapter (packages/storage/src/<adapter>/) does not import another adapter: what two share goes to the top of packages/storage/src.",
      from: { path: `^packages/storage/src/${ADAPTERS}/` },
      to: { path: `^packages/storage/src/${ADAPTERS}/`, pathNot: "^packages/storage/src/$1/" },
    },
    {
      name: "storage-shared-not-to-adapters",
      severity: "error",
      comment: "The shared storage code (top of packages/storage/src) does not depend on an adapter, except createStorage, which picks one from a URL, and tests that run several adapters.",
      from: { path: "^packages/storage/src/[^/]+$", pathNot: ["^packages/storage/src/createStorage[.]ts$", TESTS] },
      to: { path: `^packages/storage/src/${ADAPTERS}/` },
    },
    {
      name: "remote-not-to-storage",
      severity: "error",
      comment: "@fleet/remote (SSH connections, remote commands) is below storage: storage's SFTP adapter uses it, never the reverse.",
      from: { path: "^packages/remote/" },
      to: { path: "^packages/storage/" },
    },
    {
      name: "product-not-to-tests",
      severity: "error",
      comment: "Product code never imports a test file or a test helper folder.",
      from: { pathNot: TESTS },
      to: { path: TESTS },
    },
    {
      name: "no-orphans",
      severity: "error",
      comment: "A source file nothing imports and that imports nothing is dead code (entry points import their modules; tests and declaration files are exempt).",
      from: { orphan: true, pathNot: [TESTS, "[.]d[.]ts$", "/generated/"] },
      to: {},
    },
    {
      name: "not-to-unresolvable",
      severity: "error",
      comment: "Every import resolves (a missing package, a typo or a moved file).",
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: "no-undeclared-packages",
      severity: "error",
      comment: "Product code imports only npm packages its workspace's package.json declares in dependencies (test/workspaceDependencies.test.ts does the same for the workspaces themselves and for tests).",
      from: { pathNot: TESTS },
      to: { dependencyTypes: ["npm-no-pkg", "npm-unknown", "npm-dev"] },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "(^|/)(dist|node_modules|generated)/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.depcruise.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      extensions: [".ts", ".js", ".d.ts", ".json"],
    },
    skipAnalysisNotInRules: true,
  },
};
