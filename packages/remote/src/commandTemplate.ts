import { PermanentError } from "@fleet/core/errors";

/**
 * Command templates (`mkdir -p -- {dir} && du -sb -- {dir}`) compiled once: the template is
 * scanned like a POSIX shell would read it, and every `{placeholder}` must sit where a
 * single-quoted word is provably one literal argument. Anything else is refused when the
 * template is compiled — at startup for the servers and workflow files, at submission for
 * anything ad hoc — never discovered when a value arrives:
 *
 * - inside '…' or "…" (inside double quotes `$(…)` in a value would run), after a backslash,
 *   after a `$` (`${x}`, or `$'…'`, bash's escape-interpreting quote), in a `#` comment, or
 *   after a `<<` here-document;
 * - inside `…` backquotes, `$(…)`, `$((…))`, `((…))`, `${…}`, `$[…]`, `<(…)` or `>(…)`: the
 *   backquote form re-reads its text with other rules (a quoted value containing a backquote
 *   ends it early: the attack of issue 10), and the others are code or arithmetic contexts
 *   whose quoting the renderer does not model;
 * - as the program (in the first word of a command): a value must not choose what runs;
 * - anywhere in a command whose program evaluates its arguments as code (eval, sh -c, ssh,
 *   declare …; see EVALUATING): quoting protects a word from this shell, not from that one.
 *
 * Values: always single-quoted (a `'` inside is written `'\''`); a NUL byte is refused (no
 * argv can carry it). A value that starts with `-` at the start of an argument would be read
 * as an option whatever its quoting, so it is refused unless the template put `--` (end of
 * options) earlier in the same command: the template author says where the program accepts
 * `--`, e.g. `rm -r -- {path}`; or writes `./{path}` for relative paths.
 *
 * Placeholders are `{name}`; `{{` and `}}` are literal braces (`${{HOME}}` is `${HOME}`), and
 * any other brace is literal too.
 */

/** Programs that run their arguments as shell code, or hand them to a shell elsewhere. */
const EVALUATING = new Set(["eval", "source", ".", "trap", "alias", "let", "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "su", "ssh", "watch"]);
/** Builtins that evaluate a NAME argument (bash evaluates array subscripts: `declare 'a[$(cmd)]'`): no placeholder may start a word there. */
const DECLARING = new Set(["declare", "typeset", "local", "export", "readonly", "read", "unset", "mapfile", "readarray"]);
/** …and those that do so only for the argument after `-v`. */
const DASH_V_NAME = new Set(["printf", "test", "[", "[["]);

// Reserved words after which a command (its program) is still to come.
const LEADING_KEYWORDS = new Set(["if", "then", "else", "elif", "do", "while", "until", "!", "{", "time"]);
const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=/;
const PLACEHOLDER_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface TemplateSlot {
  name: string;
  /** The value begins an argument (so a leading `-` would be an option)… */
  startsArgument: boolean;
  /** …unless `--` came before it in the same command. */
  afterEndOfOptions: boolean;
}

export interface CompiledCommandTemplate {
  readonly template: string;
  /** Literal text and slots, in order. */
  readonly parts: ReadonlyArray<string | TemplateSlot>;
  /** Every placeholder name used. */
  readonly names: ReadonlySet<string>;
}

type FrameKind = "top" | "subshell" | "cmdsub" | "backtick" | "param" | "arith" | "bracket-arith" | "procsub";
const UNSAFE: ReadonlySet<FrameKind> = new Set(["cmdsub", "backtick", "param", "arith", "bracket-arith", "procsub"]);
const DESCRIBE: Record<FrameKind, string> = {
  top: "",
  subshell: "",
  cmdsub: "inside $(…)",
  backtick: "inside `…` backquotes",
  param: "inside ${…}",
  arith: "inside ((…)) arithmetic",
  "bracket-arith": "inside $[…] arithmetic",
  procsub: "inside <(…) or >(…)",
};

interface Frame {
  kind: FrameKind;
  /** The quote that was open when this frame started (restored when it ends). */
  outerQuote: "'" | '"' | undefined;
  /** Words of the current simple command (program first; assignments and leading keywords skipped). */
  words: string[];
  /** Text of the word being read, and whether it has content (quotes alone are not content). */
  word: string;
  wordHasContent: boolean;
  /** The word being read is the target of a redirection (`> file`), not an argument. */
  redirectTarget: boolean;
}

const newFrame = (kind: FrameKind, outerQuote: Frame["outerQuote"]): Frame => ({ kind, outerQuote, words: [], word: "", wordHasContent: false, redirectTarget: false });

function refuse(template: string, message: string): PermanentError {
  const shown = template.length > 120 ? `${template.slice(0, 120)}…` : template;
  return new PermanentError("invalid-payload", `command template ${JSON.stringify(shown)}: ${message}`);
}

/** Compiles a template, or throws PermanentError("invalid-payload") saying which placeholder sits where and why. */
export function compileCommandTemplate(template: string): CompiledCommandTemplate {
  if (typeof template !== "string") throw new PermanentError("invalid-payload", "a command template must be a string");
  if (template.includes("\0")) throw refuse(template, "contains a NUL byte");
  const parts: Array<string | TemplateSlot> = [];
  const names = new Set<string>();
  const stack: Frame[] = [newFrame("top", undefined)];
  let quote: "'" | '"' | undefined;
  let escaped = false;
  let comment = false;
  let heredoc = false;
  let literal = "";
  let prev = "";

  const top = () => stack[stack.length - 1]!;
  const endWord = () => {
    const f = top();
    if (f.word !== "" || f.wordHasContent) {
      if (f.redirectTarget) f.redirectTarget = false;
      else if (!(f.words.length === 0 && (LEADING_KEYWORDS.has(f.word) || ASSIGNMENT.test(f.word)))) f.words.push(f.word);
    }
    f.word = "";
    f.wordHasContent = false;
  };
  const endCommand = () => {
    endWord();
    top().words = [];
  };
  const push = (kind: FrameKind) => {
    stack.push(newFrame(kind, quote));
    quote = undefined;
  };
  const pop = () => {
    if (stack.length > 1) quote = stack.pop()!.outerQuote;
  };
  const wordChar = (ch: string, content = true) => {
    const f = top();
    f.word += ch;
    if (content) f.wordHasContent = true;
  };

  const feed = (ch: string, next: string | undefined) => {
    const f = top();
    if (comment) {
      if (ch === "\n") {
        comment = false;
        endCommand();
      }
    } else if (f.kind === "backtick") {
      // Inside backquotes only `\` and the closing backquote mean anything to this scan.
      if (escaped) escaped = false;
      else if (ch === "\\") escaped = true;
      else if (ch === "`") pop();
    } else if (quote === "'") {
      if (ch === "'") quote = undefined;
      else wordChar(ch);
    } else if (escaped) {
      escaped = false;
      wordChar(ch);
    } else if (ch === "\\") {
      escaped = true;
      wordChar(ch, false);
    } else if (quote === '"') {
      if (ch === '"') quote = undefined;
      else if (ch === "`") push("backtick");
      else if (ch === "(" && prev === "$") push("cmdsub");
      else if (ch === "{" && prev === "$") push("param");
      else if (ch === "[" && prev === "$") push("bracket-arith");
      else wordChar(ch);
    } else if (f.kind === "param") {
      if (ch === "}") pop();
      else if (ch === "{" && prev === "$") push("param");
    } else if (f.kind === "bracket-arith") {
      if (ch === "]") pop();
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      wordChar(ch, false);
    } else if (ch === "`") {
      push("backtick");
    } else if (ch === "(") {
      if (prev === "$") push("cmdsub");
      else if (prev === "<" || prev === ">") push("procsub");
      else if (prev === "(" || f.kind === "arith") push("arith");
      else {
        endCommand();
        push("subshell");
      }
    } else if (ch === ")") {
      endCommand();
      if (f.kind !== "top") pop();
      // At the top level a lone `)` ends a case pattern: a new command starts either way.
    } else if (ch === "{" && prev === "$") {
      push("param");
    } else if (ch === "[" && prev === "$") {
      push("bracket-arith");
    } else if (ch === "#" && f.word === "") {
      comment = true;
    } else if (ch === " " || ch === "\t") {
      endWord();
    } else if (ch === "&" && (prev === ">" || prev === "<")) {
      wordChar(ch); // `2>&1`: part of the redirection, not a separator
    } else if (ch === "\n" || ch === ";" || ch === "&" || ch === "|") {
      endCommand();
    } else if (ch === "<" || ch === ">") {
      endWord();
      if (ch === "<" && next === "<") heredoc = true;
      f.redirectTarget = true;
    } else {
      wordChar(ch);
    }
    prev = ch;
  };

  const slot = (name: string): TemplateSlot => {
    const where = quote
      ? `inside ${quote}…${quote} quotes`
      : comment
        ? "inside a # comment"
        : escaped
          ? "after a backslash"
          : heredoc
            ? "after a << here-document"
            : prev === "$"
              ? "right after a $ (write ${{name}} for a variable, or a space)"
              : stack.find((fr) => UNSAFE.has(fr.kind)) !== undefined
                ? DESCRIBE[[...stack].reverse().find((fr) => UNSAFE.has(fr.kind))!.kind]
                : undefined;
    if (where) throw refuse(template, `placeholder {${name}} ${where} cannot be quoted safely`);
    const f = top();
    if (f.words.length === 0 && !f.redirectTarget && !ASSIGNMENT.test(f.word)) {
      throw refuse(template, `placeholder {${name}} is (part of) the program to run: a value must not choose the command`);
    }
    const program = (f.words[0] ?? "").replace(/^.*\//, "");
    if (EVALUATING.has(program)) {
      throw refuse(template, `placeholder {${name}} is an argument of ${program}, which runs its arguments as code or hands them to a shell: quoting cannot protect it there`);
    }
    const startsArgument = !f.wordHasContent && !f.redirectTarget;
    if ((DECLARING.has(program) || (DASH_V_NAME.has(program) && f.words[f.words.length - 1] === "-v")) && startsArgument) {
      throw refuse(template, `placeholder {${name}} starts an argument of ${program}, which may evaluate it as a name with an arithmetic subscript: write NAME={${name}} or pass it after a literal word`);
    }
    const afterEndOfOptions = f.words.includes("--");
    // The value is content of the word (the next character continues it).
    f.wordHasContent = true;
    f.word += "\u0000";
    return { name, startsArgument, afterEndOfOptions };
  };

  for (let i = 0; i < template.length; i++) {
    const ch = template[i]!;
    const nextCh = template[i + 1];
    if ((ch === "{" && nextCh === "{") || (ch === "}" && nextCh === "}")) {
      literal += ch;
      feed(ch, template[i + 2]);
      i++;
      continue;
    }
    if (ch === "{") {
      const close = template.indexOf("}", i + 1);
      const name = close < 0 ? "" : template.slice(i + 1, close);
      if (PLACEHOLDER_NAME.test(name)) {
        if (literal) parts.push(literal);
        literal = "";
        parts.push(slot(name));
        names.add(name);
        prev = "'";
        i = close;
        continue;
      }
    }
    literal += ch;
    feed(ch, nextCh);
  }
  if (literal) parts.push(literal);
  if (quote) throw refuse(template, `has an unterminated ${quote} quote`);
  const open = stack.find((fr) => UNSAFE.has(fr.kind));
  if (open) throw refuse(template, `has an unterminated construct (${DESCRIBE[open.kind].replace("inside ", "")})`);
  return { template, parts, names };
}

/** The command line: each value single-quoted into its slot; invalid-payload for a missing, NUL-bearing or option-like value. */
export function fillCommandTemplate(compiled: CompiledCommandTemplate, values: Record<string, string>): string {
  let out = "";
  for (const part of compiled.parts) {
    if (typeof part === "string") {
      out += part;
      continue;
    }
    if (!Object.hasOwn(values, part.name)) throw new PermanentError("invalid-payload", `command template: no value for placeholder {${part.name}}`);
    const value = values[part.name];
    if (typeof value !== "string") throw new PermanentError("invalid-payload", `command template: value of {${part.name}} is not a string`);
    if (value.includes("\0")) throw new PermanentError("invalid-payload", `command template: value of {${part.name}} contains a NUL byte, which no command argument can carry`);
    if (value.startsWith("-") && part.startsArgument && !part.afterEndOfOptions) {
      throw new PermanentError(
        "invalid-payload",
        `command template: value of {${part.name}} starts with '-' and would be read as an option; put -- before the placeholder in the template (where the command accepts it) or write ./{${part.name}} for a relative path`,
      );
    }
    out += singleQuote(value);
  }
  return out;
}

/** Always quoted: `'…'` with `'` written as `'\''`, the one form in which nothing is special. */
export function singleQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
