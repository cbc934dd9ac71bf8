import { PermanentError } from "@fleet/core/errors";

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

const PLACEHOLDER_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Fills `{name}` placeholders with shell-quoted values: `mkdir -p {dir} && du -sb {dir}`.
 * `{{` and `}}` are literal braces; any other brace is literal too (`${HOME}` must be written
 * `${{HOME}}`, since `{HOME}` would be a placeholder).
 *
 * A placeholder is refused where quoting cannot protect it: inside '…' or "…" (inside double
 * quotes, $( ) in a value would run), right after a backslash (which would escape our
 * opening quote) and inside a # comment (a newline in the value would end the comment).
 * Here-documents are not parsed, so no placeholder may follow a `<<`. Unknown placeholders
 * and missing values are errors, never empty strings. Quoting keeps a value one literal
 * word; it cannot help a template that hands that word to another parser (`eval {x}`,
 * `sh -c {x}`, `$(( {x} ))`): don't write those.
 */
export function renderCommand(template: string, values: Record<string, string>): string {
  let out = "";
  let quote: "'" | '"' | undefined;
  let comment = false;
  let escaped = false;
  let heredoc = false;
  for (let i = 0; i < template.length; i++) {
    const ch = template[i] as string;
    const nextCh = template[i + 1];
    if ((ch === "{" && nextCh === "{") || (ch === "}" && nextCh === "}")) {
      out += ch;
      i++;
      escaped = false;
      continue;
    }
    if (ch === "{") {
      const close = template.indexOf("}", i + 1);
      const name = close < 0 ? "" : template.slice(i + 1, close);
      if (PLACEHOLDER_NAME.test(name)) {
        const where = quote
          ? `inside ${quote}…${quote} quotes`
          : comment
            ? "inside a # comment"
            : escaped
              ? "after a backslash"
              : heredoc
                ? "after a << here-document"
                : undefined;
        if (where) throw new PermanentError("invalid-payload", `command template: placeholder {${name}} ${where} cannot be quoted safely`);
        if (!Object.prototype.hasOwnProperty.call(values, name)) {
          throw new PermanentError("invalid-payload", `command template: no value for placeholder {${name}}`);
        }
        const value = values[name];
        if (typeof value !== "string") throw new PermanentError("invalid-payload", `command template: value of {${name}} is not a string`);
        out += shellQuote(value);
        i = close;
        escaped = false;
        continue;
      }
    }
    out += ch;
    // Track just enough shell syntax to know where a placeholder lands.
    if (comment) {
      if (ch === "\n") comment = false;
    } else if (quote === "'") {
      if (ch === "'") quote = undefined;
    } else if (escaped) {
      escaped = false;
    } else if (ch === "\\") {
      escaped = true;
    } else if (quote === '"') {
      if (ch === '"') quote = undefined;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
    } else if (ch === "<" && nextCh === "<") {
      heredoc = true;
    } else if (ch === "#" && (out.length === 1 || /[\s;&|()]/.test(out[out.length - 2] as string))) {
      comment = true;
    }
  }
  if (quote) throw new PermanentError("invalid-payload", `command template has an unterminated ${quote} quote`);
  return out;
}

/** The command line of either form. */
export function commandLineOf(spec: RemoteCommandSpec): string {
  return isArgv(spec) ? argvToCommand(spec) : renderCommand(spec.template, spec.values);
}

/** A short name for messages: the program, never the arguments (they may be sensitive). */
export function commandNameOf(spec: RemoteCommandSpec): string {
  const first = isArgv(spec) ? (spec[0] ?? "") : (spec.template.trim().split(/\s/)[0] ?? "");
  return first.length > 60 ? `${first.slice(0, 60)}…` : first;
}

function isArgv(spec: RemoteCommandSpec): spec is readonly string[] {
  return Array.isArray(spec);
}
