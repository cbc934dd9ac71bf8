// The build stamp: .build-complete.json at the repository root says the last build of every
// package finished without an error. The apps refuse to start without it (packages/core/src/buildStamp.ts).
//   node scripts/build-stamp.js clear   — before a build (npm run build)
//   node scripts/build-stamp.js write   — after every package built (npm run build)
//   node scripts/build-stamp.js failed  — a package's build failed (its build script): clear, exit 1
// With noEmitOnError (tsconfig.base.json) a package with a type error emits nothing; packages
// built before it in the same run are new, those after it old: together not one build, so the
// stamp goes and the apps say "run npm run build" instead of running a mix.
const { rmSync, writeFileSync } = require("node:fs");
const { join } = require("node:path");
const STAMP = process.env.FLEET_BUILD_STAMP ?? join(__dirname, "..", ".build-complete.json");
const action = process.argv[2];
if (action === "write") {
  writeFileSync(STAMP, JSON.stringify({ builtAt: new Date().toISOString(), node: process.version }) + "\n");
} else if (action === "clear" || action === "failed") {
  rmSync(STAMP, { force: true });
  if (action === "failed") {
    process.stderr.write(`build failed: ${process.cwd()} emitted nothing (noEmitOnError); the build stamp is removed, the apps will not start until \`npm run build\` succeeds\n`);
    process.exit(1);
  }
} else {
  process.stderr.write("usage: node scripts/build-stamp.js clear|write|failed\n");
  process.exit(2);
}
