import { PermanentError } from "@fleet/core/errors";
import { compileCommandTemplate, fillCommandTemplate } from "./commandTemplate";
import type { CompiledCommandTemplate } from "./commandTemplate";

/**
 * Building command lines for a remote POSIX shell without ever letting a value be read as
 * shell syntax. SSH has no argv: the server hands one string to the user's login shell
 * (`sh -c STRING`), so every value is single-quoted, the one quoting form in which nothing
 * ($, `, \, newline, !) is special; a single quote inside is written as '\'' (close, escaped
 * quote, reopen).
 */

/** A command as argv (each element quoted) or as a template whose `{name}` values are quoted. */
export type RemoteCommandSpec = readonly string[] | { template: string; values: Record<string, string> };

// Words made of these only are left bare, for readable logs: none is special to any POSIX
// shell in any position ("=" is absent so a first word is never an assignment, "~" and "#"
// because they expand or comment at the start of a word).
const SAFE_WORD = /^[A-Za-z0-9_\/.,:@%+-]+$/;

/** One argument as a shell word that the shell reads back as exactly `arg`. */
export function shellQuote(arg: string): string {
  if (typeof arg !== "string") throw new PermanentError("invalid-payload", `shell argument must be a string, not ${typeof arg}`);
  if (arg.includes("\0")) throw new PermanentError("invalid-payload", "a shell argument cannot contain a NUL byte");
  if (SAFE_WORD.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** argv → one command line, every element quoted. */
export function argvToCommand(argv: readonly string[]): string {
  if (argv.length === 0) throw new PermanentError("invalid-payload", "a remote command needs at least a program name");
  return argv.map(shellQuote).join(" ");
}

/**
 * Fills `{name}` placeholders with single-quoted values: `mkdir -p -- {dir} && du -sb -- {dir}`.
 * The template is compiled first, which refuses every placeholder quoting cannot protect
 * (inside quotes, backquotes, $(…), ${…}, arithmetic, comments, here-documents; as the
 * program; as an argument of eval, sh -c, ssh…), and a value that would be read as an option
 * unless the template put `--` before it. See commandTemplate.ts for the rules. Unknown
 * placeholders and missing values are errors, never empty strings.
 */
export function renderCommand(template: string, values: Record<string, string>): string {
  return fillCommandTemplate(compiledTemplate(template), values);
}

/**
 * Checks a template without values and returns its placeholder names: for startup (servers
 * and workflow files) and submission (ad-hoc templates), so a bad template fails before any
 * value arrives. Throws PermanentError("invalid-payload") naming the placeholder and why.
 */
export function checkCommandTemplate(template: string): ReadonlySet<string> {
  return compiledTemplate(template).names;
}

// Templates come from a few config files: remembering the compiled ones saves a scan per run.
const compiled = new Map<string, CompiledCommandTemplate>();
function compiledTemplate(template: string): CompiledCommandTemplate {
  let c = compiled.get(template);
  if (!c) {
    c = compileCommandTemplate(template);
    if (compiled.size >= 1_000) compiled.clear();
    compiled.set(template, c);
  }
  return c;
}

/** The command line of either form. */
export function commandLineOf(spec: RemoteCommandSpec): string {
  return isArgv(spec) ? argvToCommand(spec) : renderCommand(spec.template, spec.values);
}

/**
 * Words that start a command but name no program `exec` could run: reserved words, and bash's
 * and dash's builtins with no program of the same name on Debian (`exec cd /x` fails where
 * `cd /x` works; `exec type rsync`, a check, failed with 127 where `type rsync` passed).
 */
const NOT_A_PROGRAM = new Set([
  "!", "{", "}", "[[", "]]", "if", "then", "else", "elif", "fi", "case", "esac", "for", "select", "while", "until", "do", "done", "in", "function", "time", "coproc",
  ".", ":", "alias", "bg", "bind", "break", "builtin", "caller", "cd", "chdir", "command", "compgen", "complete", "compopt", "continue", "declare", "dirs", "disown",
  "enable", "eval", "exec", "exit", "export", "fc", "fg", "getopts", "hash", "help", "history", "jobs", "let", "local", "logout", "mapfile", "popd", "pushd", "read",
  "readarray", "readonly", "return", "set", "shift", "shopt", "source", "suspend", "times", "trap", "type", "typeset", "ulimit", "umask", "unalias", "unset", "wait",
]);
/** A template made of plain words and placeholders only: no quoting, expansion, operator, redirection or newline. */
const PLAIN_TEMPLATE = /^[A-Za-z0-9_/.,:@%+=\- {}]*$/;
const PROGRAM_WORD = /^[A-Za-z0-9_/.+-]+$/;

/**
 * The command line as one simple command run by `exec` (the shell replaced by the program), or
 * undefined when it is more than one simple command. A program exec'd is the process sshd
 * waits for, so sshd reports how it really ended (an exit status, or the signal that killed
 * it); a shell running a compound command reports a child killed by signal N as status 128 + N,
 * the same as a child that exits 128 + N itself. argv is always one command; a template only
 * when it is plain words and placeholders whose first word is a program (conservative: a
 * template with quotes, operators or redirections is run by the shell, as before).
 */
export function execLineOf(spec: RemoteCommandSpec): string | undefined {
  if (isArgv(spec)) return `exec ${argvToCommand(spec)}`;
  const template = spec.template.trim();
  if (!PLAIN_TEMPLATE.test(template)) return undefined;
  const first = template.split(/ +/)[0] ?? "";
  if (!PROGRAM_WORD.test(first) || NOT_A_PROGRAM.has(first)) return undefined;
  return `exec ${renderCommand(spec.template, spec.values)}`;
}

/** A short name for messages: the program, never the arguments (they may be sensitive). */
export function commandNameOf(spec: RemoteCommandSpec): string {
  const first = isArgv(spec) ? (spec[0] ?? "") : (spec.template.trim().split(/\s/)[0] ?? "");
  return first.length > 60 ? `${first.slice(0, 60)}…` : first;
}

function isArgv(spec: RemoteCommandSpec): spec is readonly string[] {
  return Array.isArray(spec);
}
