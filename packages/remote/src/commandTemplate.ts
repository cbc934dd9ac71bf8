import { PermanentError } from "@fleet/core/errors";
import { codeArgumentRefusal } from "./codeArguments";

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
 *   declare …; see EVALUATING): quoting protects a word from this shell, not from that one;
 * - anywhere in a template that does arithmetic on a variable or parameter (`$((x))`, `let`,
 *   `[[ $x -gt 0 ]]`, `${a[$i]}`…): a value may have reached that variable, and bash evaluates
 *   it there as an expression (see arithmeticRead);
 * - anywhere in a template that takes a variable's value as a variable's name (`${!x}`,
 *   `declare -n`, `read "$x"`, `printf -v "$x"`, `test -v "$x"`…): bash evaluates an array
 *   subscript in a name as code, `a[$(cmd)]` (see nameRead);
 * - as the code an interpreter or tool runs (`python3 -c {x}`, `awk {x}`, `sed -e {x}`,
 *   `tar --to-command={x}`, `find -exec {x} ;`; see codeArguments.ts).
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
/** Words that, anywhere in a command's arguments, mean a later argument may be run by a shell. */
const NESTED_EVALUATING = new Set(["eval", "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "su", "ssh"]);
/** Builtins that evaluate a NAME argument (bash evaluates array subscripts: `declare 'a[$(cmd)]'`): no placeholder may start a word there. */
const DECLARING = new Set(["declare", "typeset", "local", "export", "readonly", "read", "unset", "mapfile", "readarray"]);
/** …and those that do so only for the argument after `-v`. */
const DASH_V_NAME = new Set(["printf", "test", "[", "[["]);
/**
 * `[[ … ]]` operators that evaluate both operands as arithmetic: bash then runs `$(…)` inside
 * an array subscript of a quoted operand (`[[ 'a[$(id)]' -gt 0 ]]` runs id), so no placeholder
 * may be an operand of a `[[` command that uses one (found by a security review).
 */
const ARITHMETIC_TEST = new Set(["-eq", "-ne", "-lt", "-le", "-gt", "-ge"]);
/** Options of declare/typeset/local/export/readonly that give a variable the integer attribute: assigning it evaluates arithmetic. */
const INTEGER_ATTRIBUTE = /^-[A-Za-z]*i/;
/** A character by which arithmetic reads a variable or parameter: a name (`x`, `a[…]`) or an expansion (`$x`, `$1`). */
const READS_VARIABLE = /[A-Za-z_$]/;
/** An array element assigned (`a[i]=…`, also after declare/local): bash evaluates an indexed array's subscript as arithmetic. */
const SUBSCRIPT_ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*\[([^\]]*)\]\+?=/;
/** What a `${…}` holds before a `[` (an array's subscript follows) or a `:` (an offset follows, unless `:-`, `:=`, `:?`, `:+`). */
const SUBSCRIPTED = /^[#!]?[A-Za-z_][A-Za-z0-9_]*$/;
/**
 * A `${!…}` that lists names or keys (`${!prefix*}`, `${!prefix@}`, `${!a[@]}`) or is `$!`:
 * any other `${!name…}` is an indirection, which reads the variable named by name's value.
 */
const NOT_INDIRECTION = /^!(?:[A-Za-z_][A-Za-z0-9_]*(?:[*@]|\[[*@]\]))?$/;
/** declare/typeset/local options that make a nameref (`-n`): the variable's value names another. */
const NAMEREF_DECLARING = new Set(["declare", "typeset", "local"]);
const NAMEREF_ATTRIBUTE = /^-[A-Za-z]*n/;
/** Options of the DECLARING builtins whose next word is a plain value, not a name (`read -p PROMPT`, `mapfile -d DELIM`). */
const DECLARING_VALUE_OPTIONS: ReadonlyMap<string, ReadonlySet<string>> = new Map([
  ["read", new Set(["-d", "-i", "-n", "-N", "-p", "-t", "-u"])],
  ["mapfile", new Set(["-d", "-n", "-O", "-s", "-u", "-C", "-c"])],
  ["readarray", new Set(["-d", "-n", "-O", "-s", "-u", "-C", "-c"])],
]);
const OFFSET_AFTER = /^[#!]?(?:[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?|[0-9]+|[@*])$/;

/**
 * Programs that run another program named in their arguments (`sudo -u app ls {x}`): the rules
 * for programs apply to the one they finally run, found by skipping the wrapper's options
 * (`optionsWithValue` take the next word, or the rest of their word), its `operands` (timeout's
 * duration, chroot's root) and, for env, assignments. A placeholder where that program would
 * be is refused, and so is one in a command whose wrapped program evaluates its arguments
 * (`timeout 10 ssh h ls {x}`, `env sh -c {x}`). Options in `evaluating` run the command
 * through a shell (`sudo -s`, `flock -c`, `env -S`). Found by a security review: before, only
 * the first word was looked at, so `exec {x}` let a value choose the program and `sudo -u app
 * sh -c {x}` ran a value as code.
 */
interface Wrapper {
  optionsWithValue?: readonly string[];
  operands?: number;
  assignments?: boolean;
  evaluating?: readonly string[];
  /** Options after which nothing is run (`command -v {x}` only looks the name up). */
  noRun?: readonly string[];
}
const WRAPPERS = new Map<string, Wrapper>([
  ["exec", { optionsWithValue: ["-a"] }],
  ["command", { noRun: ["-v", "-V"] }],
  ["builtin", {}],
  // bash's `coproc [NAME] command`: the NAME form takes a compound command, so a word after coproc is read as the program.
  ["coproc", {}],
  ["nohup", {}],
  ["setsid", {}],
  ["unbuffer", {}],
  ["time", { optionsWithValue: ["-f", "-o", "--format", "--output"] }],
  ["stdbuf", { optionsWithValue: ["-i", "-o", "-e", "--input", "--output", "--error"] }],
  ["nice", { optionsWithValue: ["-n", "--adjustment"] }],
  ["ionice", { optionsWithValue: ["-c", "-n", "-p", "-P", "-u", "--class", "--classdata", "--pid", "--pgid", "--uid"] }],
  ["env", { optionsWithValue: ["-u", "-C", "--unset", "--chdir"], assignments: true, evaluating: ["-S", "--split-string"] }],
  ["sudo", { optionsWithValue: ["-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-U", "-T", "-R", "--user", "--group", "--host", "--prompt", "--close-from", "--chdir", "--role", "--type", "--other-user", "--command-timeout", "--chroot"], evaluating: ["-s", "-i", "--shell", "--login"] }],
  ["doas", { optionsWithValue: ["-u", "-C"], evaluating: ["-s"] }],
  ["runuser", { optionsWithValue: ["-u", "-g", "-G", "-s", "-w", "--user", "--group", "--supp-group", "--shell", "--whitelist-environment"], evaluating: ["-c", "-l", "--command", "--session-command", "--login"] }],
  ["timeout", { optionsWithValue: ["-s", "-k", "--signal", "--kill-after"], operands: 1 }],
  ["chroot", { optionsWithValue: ["--userspec", "--groups"], operands: 1 }],
  ["flock", { optionsWithValue: ["-w", "-E", "--timeout", "--wait", "--conflict-exit-code"], operands: 1, evaluating: ["-c", "--command"] }],
  ["taskset", { operands: 1 }],
  ["chrt", { operands: 1 }],
  ["xargs", { optionsWithValue: ["-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s", "--arg-file", "--delimiter", "--max-args", "--max-procs", "--max-chars", "--max-lines", "--process-slot-var"] }],
]);

// The name the shell runs: quotes and backslashes removed (`'sh'`, `e''val`, `\eval` and
// `"sudo"` are sh, eval and sudo to the shell; found by a security review), then the folder.
const basename = (word: string) => word.replace(/['"\\]/g, "").replace(/^.*\//, "");

/**
 * The program a command finally runs when its first word is a wrapper, as seen from a
 * placeholder in the word after `words` (whose text so far is `current`): the program's name,
 * or why the placeholder is refused. Undecidable cases are refused.
 */
function wrappedProgram(words: readonly string[], current: string): { program: string; index: number } | { refuse: string } {
  let i = 0;
  let program = basename(words[0] ?? "");
  for (let wrapper = WRAPPERS.get(program); wrapper; wrapper = WRAPPERS.get(program)) {
    const name = program;
    i++;
    let operands = wrapper.operands ?? 0;
    let optionsDone = false;
    let valueNext = false;
    let noRun = false;
    for (;;) {
      if (i >= words.length) {
        // The placeholder is in the wrapper's own arguments.
        if (valueNext || operands > 0 || noRun) return current.startsWith("-") && !valueNext ? { refuse: `is (part of) an option of ${name}, which decides what ${name} runs` } : { program: name, index: words.length };
        if (!optionsDone && current.startsWith("-")) return { refuse: `is (part of) an option of ${name}, which decides what ${name} runs` };
        return { refuse: `is (part of) the program ${name} runs: a value must not choose the command` };
      }
      const word = words[i]!;
      if (valueNext) {
        valueNext = false;
        i++;
        continue;
      }
      if (!optionsDone && word === "--") {
        optionsDone = true;
        i++;
        continue;
      }
      if (!optionsDone && wrapper.assignments && ASSIGNMENT.test(word)) {
        i++;
        continue;
      }
      if (!optionsDone && word.startsWith("-") && word !== "-") {
        const option = optionOf(word, wrapper);
        if (option.evaluating) return { refuse: `is in a command run by ${name} ${option.evaluating}, which hands it to a shell: quoting cannot protect it there` };
        if (wrapper.noRun?.includes(word)) noRun = true;
        valueNext = option.valueNext;
        i++;
        continue;
      }
      if (operands > 0) {
        operands--;
        i++;
        continue;
      }
      break;
    }
    if (noRun) return { program: name, index: words.length };
    program = basename(words[i]!);
  }
  return { program, index: i };
}

/**
 * The rules for a command run by another program without a shell (find's `-exec`): a
 * placeholder may not be its program, an argument of a shell or eval it runs, or code of an
 * interpreter it runs (wrappers looked through).
 */
function runCommandRefusal(words: readonly string[], current: string): string | undefined {
  let program = basename(words[0]!);
  let index = 0;
  if (WRAPPERS.has(program)) {
    const wrapped = wrappedProgram(words, current);
    if ("refuse" in wrapped) return wrapped.refuse;
    ({ program, index } = wrapped);
  }
  if (EVALUATING.has(program)) return `is an argument of ${program}, which runs its arguments as code or hands them to a shell: quoting cannot protect it there`;
  return codeArgumentRefusal(program, words.slice(index + 1), current, runCommandRefusal);
}

/** One option word of a wrapper: whether the next word is its value, and whether it makes the wrapper use a shell. */
function optionOf(word: string, wrapper: Wrapper): { valueNext: boolean; evaluating?: string } {
  const withValue = wrapper.optionsWithValue ?? [];
  const evaluating = wrapper.evaluating ?? [];
  if (word.startsWith("--")) {
    const [long] = word.split("=", 1) as [string];
    if (evaluating.includes(long)) return { valueNext: false, evaluating: long };
    return { valueNext: !word.includes("=") && withValue.includes(long) };
  }
  // Short options, possibly grouped (`-Eu app`, `-uapp`): the first that takes a value ends the group.
  for (let k = 1; k < word.length; k++) {
    const flag = `-${word[k]}`;
    if (evaluating.includes(flag)) return { valueNext: false, evaluating: flag };
    if (withValue.includes(flag)) return { valueNext: k === word.length - 1 };
  }
  return { valueNext: false };
}

// Reserved words after which a command (its program) is still to come.
// (`time` is a wrapper below: `time -p {x}` must not make the value the program.)
const LEADING_KEYWORDS = new Set(["if", "then", "else", "elif", "do", "while", "until", "!", "{"]);
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
  /** Placeholders of the current command, and whether it is a `[[` using an arithmetic operator (see ARITHMETIC_TEST). */
  slots: string[];
  arithmeticTest: boolean;
  /** A `${…}`'s text so far, and whether it is in an array subscript or an offset (arithmetic) now. */
  param: string;
  paramArithmetic: "subscript" | "offset" | undefined;
}

const newFrame = (kind: FrameKind, outerQuote: Frame["outerQuote"]): Frame => ({
  kind,
  outerQuote,
  words: [],
  word: "",
  wordHasContent: false,
  redirectTarget: false,
  slots: [],
  arithmeticTest: false,
  param: "",
  paramArithmetic: undefined,
});

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

  // An assignment taking a placeholder, and a declaration of an integer variable (`declare -i n`):
  // assigning such a variable evaluates the value as arithmetic, so the two never go together.
  let assignmentSlot: string | undefined;
  let integerDeclared = false;
  // Where the template does arithmetic on a variable or parameter (the first place), and the
  // `[[ … ]]` being read (it goes on after && and ||): checked against placeholders at the end.
  let arithmeticRead: string | undefined;
  const test = { open: false, arithmetic: false, variableOperand: false };
  const readsArithmetic = (where: string) => {
    arithmeticRead ??= where;
  };
  // Where the template takes a variable's value as the name of a variable (the first place):
  // bash evaluates an array subscript in such a name as arithmetic, `$(…)` in it included.
  let nameRead: string | undefined;
  const readsName = (where: string) => {
    nameRead ??= where;
  };

  const top = () => stack[stack.length - 1]!;
  const arithmeticTestSlot = (f: Frame) => {
    if (f.arithmeticTest && f.slots.length > 0) {
      throw refuse(template, `placeholder {${f.slots[0]}} is an operand of [[ … ]] with an arithmetic comparison (${[...ARITHMETIC_TEST].join(" ")}), where bash evaluates array subscripts in it as code: compare with == or use [ … ]`);
    }
  };
  const endWord = () => {
    const f = top();
    if (f.word !== "" || f.wordHasContent) {
      if (f.redirectTarget) f.redirectTarget = false;
      else if (!(f.words.length === 0 && (LEADING_KEYWORDS.has(f.word) || ASSIGNMENT.test(f.word)))) {
        f.words.push(f.word);
        if (f.words[0] === "[[" && ARITHMETIC_TEST.has(f.word)) {
          f.arithmeticTest = true;
          arithmeticTestSlot(f);
        }
        const program = WRAPPERS.has(basename(f.words[0]!)) ? wrappedProgram(f.words.slice(0, -1), f.word) : { program: basename(f.words[0]!) };
        if ("program" in program && DECLARING.has(program.program) && INTEGER_ATTRIBUTE.test(f.word)) integerDeclared = true;
        if ("program" in program && program.program === "let" && f.words.length > 1) readsArithmetic("let");
        if (f.words.length > 1 && "program" in program && DECLARING.has(program.program)) subscriptAssigned(f.word);
        if (f.words.length > 1 && "program" in program) expandedName(program.program, f.words);
        testWord(f.words.length === 1, f.word);
      } else if (ASSIGNMENT.test(f.word)) {
        subscriptAssigned(f.word);
      }
    }
    f.word = "";
    f.wordHasContent = false;
  };
  const endCommand = () => {
    endWord();
    const f = top();
    f.words = [];
    f.slots = [];
    f.arithmeticTest = false;
  };
  /**
   * A word that is an expansion where a builtin takes a variable's *name*: `read "$x"`, `unset
   * "$x"`, `declare "$x"=1`, `printf -v "$x"`, `test -v "$x"`, and any `declare -n` (a nameref).
   * `words` ends with the word just read.
   */
  const expandedName = (program: string, words: readonly string[]) => {
    const word = words[words.length - 1]!;
    const before = words[words.length - 2]!;
    // The name before any `=` and `[` (an expansion in a subscript is the arithmetic rule's).
    const expands = (w: string) => w.split("=", 1)[0]!.replace(/\[.*$/, "").includes("$");
    if (DECLARING.has(program)) {
      if (NAMEREF_DECLARING.has(program) && NAMEREF_ATTRIBUTE.test(word)) readsName(`${program} -n (a nameref)`);
      const options = DECLARING_VALUE_OPTIONS.get(program);
      const afterValueOption = options !== undefined && options.has(before.replace(/['"]/g, ""));
      if (!/^['"]?-/.test(word) && !afterValueOption && expands(word)) readsName(`an expansion as the name ${program} takes`);
    } else if (DASH_V_NAME.has(program) && before === "-v" && expands(word)) {
      readsName(`an expansion after ${program} -v`);
    }
  };
  /** `a[i]=…`: an indexed array's subscript is arithmetic. */
  const subscriptAssigned = (word: string) => {
    const subscript = SUBSCRIPT_ASSIGNMENT.exec(word)?.[1];
    if (subscript !== undefined && READS_VARIABLE.test(subscript)) readsArithmetic("an array subscript");
  };
  /** The words of a `[[ … ]]`: with -eq, -gt… its operands are arithmetic, a name or an expansion among them reads a variable. */
  const testWord = (first: boolean, word: string) => {
    if (first && word === "[[") {
      Object.assign(test, { open: true, arithmetic: false, variableOperand: false });
      return;
    }
    if (!test.open) return;
    if (word === "]]") test.open = false;
    else if (ARITHMETIC_TEST.has(word)) test.arithmetic = true;
    else if (!/^-[A-Za-z]{1,2}$/.test(word) && READS_VARIABLE.test(word)) test.variableOperand = true;
    if (test.arithmetic && test.variableOperand) readsArithmetic("[[ … ]] with an arithmetic comparison");
  };
  /** A character of a `${…}`: an array subscript (`${a[i]}`) and an offset (`${s:i}`) are arithmetic. */
  const paramChar = (f: Frame, ch: string, next: string | undefined) => {
    if (f.paramArithmetic !== undefined) {
      if (READS_VARIABLE.test(ch)) readsArithmetic(f.paramArithmetic === "subscript" ? "an array subscript" : "a ${…:offset}");
      if (ch === "]" && f.paramArithmetic === "subscript") f.paramArithmetic = undefined;
    } else if (ch === "[" && SUBSCRIPTED.test(f.param)) {
      f.paramArithmetic = "subscript";
    } else if (ch === ":" && OFFSET_AFTER.test(f.param) && next !== undefined && !"-=?+".includes(next)) {
      f.paramArithmetic = "offset";
    }
    f.param += ch;
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
    if (!comment && f.kind !== "backtick" && READS_VARIABLE.test(ch) && stack.some((fr) => fr.kind === "arith" || fr.kind === "bracket-arith")) {
      readsArithmetic("$((…)), ((…)) or $[…]");
    }
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
      if (ch === "}") {
        if (f.param.startsWith("!") && !NOT_INDIRECTION.test(f.param)) readsName("${!name}, an indirection");
        pop();
      }
      else if (ch === "{" && prev === "$") push("param");
      else paramChar(f, ch, next);
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
      // A `[[ … ]]` goes on after && and ||, not after a newline or `;`.
      if (ch === "\n" || ch === ";") test.open = false;
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
    if (ASSIGNMENT.test(f.word) && (f.words.length === 0 || DECLARING.has(basename(f.words[0]!)))) assignmentSlot ??= name;
    let program = basename(f.words[0] ?? "");
    let programIndex = 0;
    if (WRAPPERS.has(program) && !f.redirectTarget) {
      const wrapped = wrappedProgram(f.words, f.word);
      if ("refuse" in wrapped) throw refuse(template, `placeholder {${name}} ${wrapped.refuse}`);
      ({ program, index: programIndex } = wrapped);
    }
    if (program === "[[") {
      f.slots.push(name);
      arithmeticTestSlot(f);
    }
    if (EVALUATING.has(program)) {
      throw refuse(template, `placeholder {${name}} is an argument of ${program}, which runs its arguments as code or hands them to a shell: quoting cannot protect it there`);
    }
    // A shell or ssh further along the command runs what follows it: `find … -exec sh -c {x}`,
    // `rsync -e ssh … {x}`, `docker exec c sh -c {x}` (found by a security review).
    const nested = f.words.slice(1).map(basename).find((w) => NESTED_EVALUATING.has(w));
    if (nested !== undefined && !f.redirectTarget) {
      throw refuse(template, `placeholder {${name}} comes after ${nested} in the same command, which may run it as code (find -exec sh -c, rsync -e ssh…): quoting cannot protect it there`);
    }
    const code = f.redirectTarget ? undefined : codeArgumentRefusal(program, f.words.slice(programIndex + 1), f.word, runCommandRefusal);
    if (code !== undefined) throw refuse(template, `placeholder {${name}} ${code}`);
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
  endWord(); // the template's last word, read as if a newline followed
  if (assignmentSlot !== undefined && integerDeclared) {
    throw refuse(template, `placeholder {${assignmentSlot}} is assigned to a variable while the template declares integer variables (declare -i): bash evaluates such an assignment as arithmetic, array subscripts as code`);
  }
  if (integerDeclared) readsArithmetic("an integer variable (declare -i)");
  // A value reaches variables in many ways the scan does not follow (NAME={x}, for, printf -v,
  // read, a function's arguments), and wherever bash does arithmetic on a variable it evaluates
  // the variable's value as an expression, array subscripts in it as code: `x={x}; echo $((x))`
  // ran a value `a[$(cmd)]` (found by review). So a template with placeholders does arithmetic on
  // literal numbers only.
  const first = names.values().next();
  if (!first.done && nameRead !== undefined) {
    throw refuse(template, `placeholder {${first.value}} is in a template that takes a variable's value as a variable's name (${nameRead}): a value may reach that variable (NAME={x}, for, a function's arguments), and bash evaluates an array subscript in a name as code (\`a[$(cmd)]\`); name variables literally`);
  }
  if (!first.done && arithmeticRead !== undefined) {
    throw refuse(template, `placeholder {${first.value}} is in a template that evaluates arithmetic on a variable or parameter (${arithmeticRead}): a value may reach that variable (NAME={x}, for, printf -v, a function's arguments), and bash evaluates its value there as an expression, array subscripts as code; do arithmetic on literal numbers only, or compare numbers with [ … -gt … ]`);
  }
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
