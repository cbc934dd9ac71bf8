import { Command, CommanderError, InvalidArgumentError } from "commander";
import { describe } from "@fleet/core/classifyError";
import { ConfigError } from "@fleet/core/errors";
import { describeDatabaseError } from "@fleet/db/databaseErrors";
import { createCliContext } from "./context";
import type { CliContext } from "./context";
import { jsonText, terminalSafe } from "./terminalText";

/**
 * How every `fleet` command runs and ends. Exit codes: 0 success, 1 a runtime failure (with a
 * one-line reason), 2 a usage error (with the command's usage line) or invalid configuration.
 */
export type Run = (fn: (ctx: CliContext) => Promise<number | void>) => Promise<void>;

/** Wrong arguments found by a command itself (not by the option parser): exit 2 with the usage line. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A failure already explained on stderr: exit with its code, print nothing more. */
export class ReportedFailure extends Error {
  constructor(readonly exitCode: number) {
    super(`exit ${exitCode}`);
  }
}

let currentCommand: Command | undefined;

/** `fleet migrate retry [options]`: the usage line of a command. */
export function usageLine(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return `usage: ${names.join(" ")} ${cmd.usage()}`.trimEnd();
}

export function makeRun(env: NodeJS.ProcessEnv): Run {
  return async (fn) => {
    let ctx: CliContext | undefined;
    try {
      ctx = createCliContext(env);
      process.exitCode = (await fn(ctx)) ?? 0;
    } catch (err) {
      process.exitCode = reportFailure(err, ctx?.config.DATABASE_URL ?? env.DATABASE_URL);
    } finally {
      // A connection whose server stopped answering (a read abandoned by Ctrl-C) would keep
      // the pool's close waiting for good (found by review: --watch hung after Ctrl-C).
      const closed = ctx ? await Promise.race([ctx.close().then(() => true, () => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), CLOSE_WAIT_MS).unref())]) : true;
      if (!closed) {
        process.stderr.write(`fleet: a connection did not close within ${CLOSE_WAIT_MS / 1000} s (its server stopped answering): exiting anyway\n`);
        process.exit(process.exitCode ?? 1);
      }
    }
  };
}

const CLOSE_WAIT_MS = 5_000;

/** Prints why a command failed and returns its exit code. */
export function reportFailure(err: unknown, databaseUrl: string | undefined): number {
  if (err instanceof ReportedFailure) return err.exitCode;
  if (err instanceof UsageError) {
    process.stderr.write(`fleet: ${terminalSafe(err.message)}\n${currentCommand ? `${usageLine(currentCommand)}\n` : ""}`);
    return 2;
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`fleet: ${terminalSafe(err.message)}\n`);
    return 2;
  }
  const database = databaseUrl ? describeDatabaseError(err, databaseUrl) : undefined;
  process.stderr.write(`fleet: ${terminalSafe(database ?? describe(err))}\n`);
  return 1;
}

/**
 * Usage errors of the option parser (unknown option, missing or invalid value, unknown
 * command) exit 2 with the failing command's usage line instead of commander's exit 1 and a
 * page of help; --help and --version exit 0. Applied to every command of the tree.
 */
export function installUsageErrors(program: Command): void {
  const visit = (cmd: Command) => {
    cmd.showHelpAfterError(false);
    cmd.exitOverride((err) => {
      throw Object.assign(err, { command: cmd });
    });
    cmd.commands.forEach(visit);
  };
  visit(program);
  program.hook("preAction", (_program, action) => {
    currentCommand = action;
  });
}

/** What the entry point does with an error out of parseAsync (commander's, after its own message). */
export function exitCodeOf(err: unknown): number {
  if (err instanceof CommanderError) {
    if (err.exitCode === 0) return 0;
    const cmd = (err as CommanderError & { command?: Command }).command;
    // commander already printed "error: …"; help shown for a bare group (`fleet migrate`) is usage too.
    if (cmd && err.code !== "commander.help") process.stderr.write(`${usageLine(cmd)}\n(add --help for more)\n`);
    return 2;
  }
  process.stderr.write(`fleet: ${describe(err)}\n`);
  return 1;
}

/**
 * Output that survives its reader going away: `fleet config | head` closes the pipe early, and
 * the next write would fail with EPIPE and a stack. The reader has what it wanted: stop quietly.
 */
export function installEpipeGuard(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE") process.exit(typeof process.exitCode === "number" ? process.exitCode : 0);
      throw err;
    });
  }
}

/** An integer option within bounds (`--limit abc` or `--limit 0` is a usage error, not a default). */
export function integerOption(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const digits = value.trim().replace(/_/g, "");
    const n = /^-?\d+$/.test(digits) ? Number(digits) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(max === Number.MAX_SAFE_INTEGER ? `expected an integer ≥ ${min}` : `expected an integer from ${min} to ${max}`);
    }
    return n;
  };
}

/** Repeatable option: each occurrence appended. */
export function collect<T>(parse: (value: string) => T): (value: string, previous: T[] | undefined) => T[] {
  return (value, previous) => [...(previous ?? []), parse(value)];
}

/** One line of JSON, or the text (control characters shown escaped: terminalSafe). */
export function print(json: boolean | undefined, value: unknown, text: string): void {
  process.stdout.write(json ? `${jsonText(value)}\n` : text === "" ? "" : `${terminalSafe(text)}\n`);
}
