import { existsSync } from "node:fs";
import { join } from "node:path";

/**
 * Where `npm run build` records that every package built (scripts/build-stamp.js): the
 * repository root, three levels above packages/core/dist. FLEET_BUILD_STAMP overrides it (tests).
 */
export function buildStampPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.FLEET_BUILD_STAMP ?? join(__dirname, "..", "..", "..", ".build-complete.json");
}

/**
 * Refuses to run a half-updated build: a failed build removes the stamp (a package with a type
 * error emits nothing, so packages before it are new and those after it old). Called first
 * thing by every app's main; says what to do instead of starting a mix.
 */
export function assertCompleteBuild(app: string, env: NodeJS.ProcessEnv = process.env): void {
  const stamp = buildStampPath(env);
  if (existsSync(stamp)) return;
  process.stderr.write(`fleet ${app}: the last build did not complete (no ${stamp}): the compiled packages may be a mix of two builds. Run \`npm run build\` and fix what it reports; nothing was started.\n`);
  process.exit(3);
}
