// Tests run from TypeScript sources (no build needed for in-process code); tests that
// spawn real worker processes use the compiled apps, so `npm test` builds first.
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/packages", "<rootDir>/apps", "<rootDir>/docs", "<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  testPathIgnorePatterns: ["/node_modules/", "/dist/"],
  transform: { "^.+\\.ts$": ["@swc/jest", { jsc: { target: "es2022", parser: { syntax: "typescript" } }, module: { type: "commonjs" } }] },
  moduleNameMapper: {
    // Prisma's generated client and NodeNext-style imports say ".js" for ".ts" siblings.
    "^(\\.{1,2}/.*)\\.js$": "$1",
    "^@fleet/(core|db|remote|storage|jobs|testing)/(.*)$": "<rootDir>/packages/$1/src/$2",
    // `fleet config` lists every app's variables from their schemas; the bench uses the CLI's context.
    "^@fleet/(worker|scheduler|dashboard|cli)/(.*)$": "<rootDir>/apps/$1/src/$2",
  },
  testTimeout: 60000,
  // Three files at once on a 2-core machine: the suites mostly wait (leases, lock periods,
  // polls, private servers starting). Measured on the 45 slowest files (2026-12-06, a machine
  // shared with other work): 3 workers 432 s wall, their times summed 0.92x those of a 2-worker
  // run, all passing; with 4 (and heavier other load) the CLI suites, a node process per
  // command, took 3-6x as long.
  maxWorkers: 3,
};
