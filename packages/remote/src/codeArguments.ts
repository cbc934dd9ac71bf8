/**
 * Programs that run one of their arguments as code: interpreters (`python -c CODE`, `perl -e`,
 * `awk PROGRAM`, `sed SCRIPT`) and tools with an option naming a command they run
 * (`tar --to-command=CMD`, `rsync -e CMD`, `git -c core.pager=CMD`, `find -exec CMD ;`).
 * Single quotes make a value one literal argument, but that program then reads the argument as
 * code: `python3 -c {x}` with `__import__('os').system('id')` runs id whatever its quoting.
 *
 * The rule: a placeholder may not be (part of) the code such a program runs — the value of a
 * code option, the program operand of awk or sed, the script file of an interpreter, the module
 * of `python -m` — nor part of one of its option words (`-{x}` could spell `-c…`). Arguments
 * after the code are data (`python3 /opt/report.py {x}`, `awk '{{print $1}}' {x}`, `sed -n 1p
 * {x}`) except for `perl -n`/`-p`, which open them with two-argument open, where `cmd|` runs
 * cmd. Found by a security review (before, only shells, eval, su, ssh and watch were known).
 */

interface CodeRunner {
  /** Options whose value is code, a command line, or names the code that runs (`-c`, `-e`, `-M`, `-f FILE`, `--to-command`). */
  code: readonly string[];
  /** Other options that take a value (the next word unless attached), to find where the operands start. */
  withValue?: readonly string[];
  /** Options after which the next word names the code and the options end (`python -m MODULE args…`). */
  ending?: readonly string[];
  /** What the first operand is when no code option gave the code: the code itself (awk, sed) or a script file to run (python). */
  firstOperand?: "code" | "script" | "data";
  /** Options that make the operands be opened with perl's two-argument open. */
  twoArgumentOpen?: readonly string[];
  /** Operands from this one on (1-based) are code (`sqlite3 DB SQL…`: SQL and dot-commands, `.shell CMD` among them). */
  codeFromOperand?: number;
  /** Operands before `--` are read as commands when they start with `+` (vim's `+CMD`): a value may not be one there. */
  plusCommands?: boolean;
}

const PYTHON: CodeRunner = { code: ["-c"], ending: ["-m"], withValue: ["-W", "-X", "-Q", "--check-hash-based-pycs"], firstOperand: "script" };
const PERL: CodeRunner = { code: ["-e", "-E", "-M", "-m", "-I", "-f"], firstOperand: "script", twoArgumentOpen: ["-n", "-p"] };
const RUBY: CodeRunner = { code: ["-e", "-r", "-I", "--require"], withValue: ["-C", "--encoding", "--external-encoding", "--internal-encoding"], firstOperand: "script" };
const NODE: CodeRunner = {
  code: ["-e", "--eval", "-p", "--print", "-r", "--require", "--import", "--loader", "--experimental-loader", "--env-file"],
  withValue: ["--title", "-C", "--conditions", "--input-type", "--stack-size", "--max-old-space-size"],
  firstOperand: "script",
};
const PHP: CodeRunner = { code: ["-r", "-B", "-R", "-E", "-F", "-f", "-d", "-c", "-z"], withValue: ["-t", "-S"], firstOperand: "script" };
const LUA: CodeRunner = { code: ["-e", "-l"], firstOperand: "script" };
const R: CodeRunner = { code: ["-e", "--file", "-f"], firstOperand: "script" };
const JULIA: CodeRunner = { code: ["-e", "--eval", "-E", "--print", "-L", "--load"], withValue: ["-t", "--threads", "-p", "--procs", "-J", "--sysimage"], firstOperand: "script" };
const POWERSHELL: CodeRunner = { code: ["-c", "-command", "-Command", "-e", "-ec", "-EncodedCommand", "-f", "-File"], firstOperand: "script" };
const AWK: CodeRunner = {
  code: ["-f", "--file", "-e", "--source", "-i", "--include", "-l", "--load", "-E", "--exec"],
  withValue: ["-F", "-v", "--field-separator", "--assign"],
  firstOperand: "code",
};
const SED: CodeRunner = { code: ["-e", "--expression", "-f", "--file"], withValue: ["-l", "--line-length"], firstOperand: "code" };
// Database shells and editors whose commands run shell commands (psql `\!`, mysql `system`,
// sqlite3 `.shell`, vim `:!`, gdb `shell`): their code options are code like `python -c`.
const PSQL: CodeRunner = {
  code: ["-c", "--command", "-f", "--file"],
  withValue: ["-d", "--dbname", "-h", "--host", "-p", "--port", "-U", "--username", "-v", "--set", "--variable", "-o", "--output", "-L", "--log-file", "-P", "--pset", "-F", "--field-separator", "-R", "--record-separator", "-T", "--table-attr"],
};
const MYSQL: CodeRunner = {
  code: ["-e", "--execute", "--init-command"],
  withValue: ["-h", "--host", "-u", "--user", "-P", "--port", "-D", "--database", "-S", "--socket", "--defaults-file", "--defaults-extra-file"],
};
const SQLITE: CodeRunner = {
  code: ["-cmd", "--cmd", "-init", "--init"],
  withValue: ["-separator", "--separator", "-newline", "--newline", "-nullvalue", "--nullvalue", "-vfs", "--vfs", "-mmap", "--mmap", "-maxsize", "--maxsize", "-heap", "--heap", "-lookaside", "--lookaside", "-pagecache", "--pagecache"],
  firstOperand: "data",
  codeFromOperand: 2,
};
const VIM: CodeRunner = { code: ["-c", "--cmd", "-S", "-u", "-U"], withValue: ["-T", "-i", "-t", "-q", "-w", "-W"], firstOperand: "data", plusCommands: true };
const GDB: CodeRunner = {
  code: ["-ex", "--ex", "-eval-command", "--eval-command", "-iex", "--iex", "-init-eval-command", "--init-eval-command", "-x", "--x", "-command", "--command", "-ix", "--ix", "-init-command", "--init-command"],
  withValue: ["-p", "--pid", "-cd", "--cd", "-d", "--directory", "-core", "--core", "-c"],
};

const RUNNERS = new Map<string, CodeRunner>([
  ...["python", "python2", "python3", "pypy", "pypy3"].map((n) => [n, PYTHON] as const),
  ["perl", PERL],
  ["ruby", RUBY],
  ...["node", "nodejs", "bun"].map((n) => [n, NODE] as const),
  ["php", PHP],
  ...["lua", "luajit"].map((n) => [n, LUA] as const),
  ...["Rscript", "R"].map((n) => [n, R] as const),
  ["julia", JULIA],
  ...["pwsh", "powershell"].map((n) => [n, POWERSHELL] as const),
  ...["tclsh", "wish", "expect", "osascript", "php-cgi"].map((n) => [n, { code: ["-e", "-c", "-f"], firstOperand: "script" } as CodeRunner] as const),
  ...["awk", "gawk", "mawk", "nawk"].map((n) => [n, AWK] as const),
  ...["sed", "gsed"].map((n) => [n, SED] as const),
  ["psql", PSQL],
  ...["mysql", "mariadb"].map((n) => [n, MYSQL] as const),
  ...["sqlite3", "sqlite"].map((n) => [n, SQLITE] as const),
  ...["vim", "vi", "nvim", "ex", "view", "vimdiff", "rvim", "gvim"].map((n) => [n, VIM] as const),
  ["gdb", GDB],
  // Tools whose options name a command they run (GNU tools read options after operands too).
  ["tar", { code: ["-I", "--use-compress-program", "--to-command", "--checkpoint-action", "-F", "--info-script", "--new-volume-script", "--rsh-command", "--rmt-command"], withValue: ["-C", "-f", "-b", "-g", "-K", "-L", "-N", "-T", "-V", "-X", "--directory", "--file"] }],
  ["rsync", { code: ["-e", "--rsh", "--rsync-path"], withValue: ["-B", "-f", "-M", "-T", "--filter", "--temp-dir"] }],
  ["zip", { code: ["-TT", "--unzip-command"], withValue: ["-b", "-n", "-t", "-tt", "-x", "-i"] }],
  ["git", { code: ["-c", "--config-env", "--exec-path", "--upload-pack", "--receive-pack", "--exec"], withValue: ["-C", "--git-dir", "--work-tree", "--namespace"] }],
]);

/** The operator-facing name of a program's code option, for messages. */
const describeOption = (program: string, option: string) => `${program} ${option}`;

/** One option word: its name as listed (`-c`, `--eval`), whether its value is attached, and the options it groups. */
function optionWord(word: string, runner: CodeRunner): Array<{ option: string; attached: boolean }> {
  const listed = [...runner.code, ...(runner.withValue ?? []), ...(runner.ending ?? []), ...(runner.twoArgumentOpen ?? [])];
  const [name] = word.split("=", 1) as [string];
  if (word.startsWith("--") || listed.includes(name)) return [{ option: name, attached: name !== word }];
  // Short options, possibly grouped (`-lne`, `-Ic`): the first that takes a value ends the group.
  const flags: Array<{ option: string; attached: boolean }> = [];
  for (let k = 1; k < word.length; k++) {
    const option = `-${word[k]}`;
    const takesValue = runner.code.includes(option) || runner.withValue?.includes(option) || runner.ending?.includes(option);
    flags.push({ option, attached: takesValue === true && k < word.length - 1 });
    if (takesValue) break;
  }
  return flags;
}

/**
 * A placeholder inside an option word (`-{x}`, `--eval={x}`, `-F{x}`) is data only as the value
 * of an option that takes data; anywhere else the value could spell (or be) code.
 */
function optionWordRefusal(program: string, text: string, runner: CodeRunner): string | undefined {
  const refusal = `is (part of) an option of ${program}, where it could name code for ${program} to run`;
  if (text.startsWith("--")) {
    if (!text.includes("=")) return refusal;
    const [name] = text.split("=", 1) as [string];
    return runner.code.includes(name) || runner.ending?.includes(name) ? `is (part of) the code ${describeOption(program, name)} runs: quoting cannot protect it there` : undefined;
  }
  const flags = optionWord(text, runner);
  const code = flags.find((f) => runner.code.includes(f.option) || runner.ending?.includes(f.option));
  if (code) return `is (part of) the code ${describeOption(program, code.option)} runs: quoting cannot protect it there`;
  const last = flags[flags.length - 1];
  return last !== undefined && runner.withValue?.includes(last.option) ? undefined : refusal;
}

/**
 * Why a placeholder in the word after `args` (whose text so far is `current`) is refused, for a
 * command whose program is `program` and whose arguments before it are `args`; undefined when it
 * is data. Placeholders already in `args` are `\u0000`. `commandRules` judges a command that
 * this one runs (find's -exec) like a command of the template.
 */
export function codeArgumentRefusal(program: string, args: readonly string[], current: string, commandRules: CommandRules): string | undefined {
  if (program === "find") return findExecRefusal(args, current, commandRules);
  // Versioned names run the same interpreter: python3.12, perl5.36, php8.2, lua5.4.
  const runner = RUNNERS.get(program) ?? RUNNERS.get(program.replace(/[0-9.]+$/, ""));
  if (!runner) return undefined;
  const takes = (option: string) => runner.code.includes(option) || runner.withValue?.includes(option) || runner.ending?.includes(option);
  let codeGiven = false;
  let operands = 0;
  let optionsDone = false;
  let valueNext: string | undefined;
  let twoArgumentOpen: string | undefined;
  for (const word of [...args, undefined]) {
    const isCurrent = word === undefined;
    const text = word ?? current;
    if (valueNext !== undefined) {
      const option = valueNext;
      valueNext = undefined;
      if (runner.code.includes(option)) {
        if (isCurrent) return `is the value of ${describeOption(program, option)}, which is code ${program} runs (or names it): quoting cannot protect it there`;
        codeGiven = true;
      } else if (runner.ending?.includes(option)) {
        if (isCurrent) return `names the module ${describeOption(program, option)} runs: a value must not choose the code`;
        return undefined; // `python -m module args…`: the rest are the module's arguments
      }
      continue;
    }
    if (!optionsDone && text === "--") {
      optionsDone = true;
      continue;
    }
    if (!optionsDone && text.startsWith("-") && (text !== "-" || isCurrent)) {
      if (isCurrent) return optionWordRefusal(program, text, runner);
      for (const { option, attached } of optionWord(text, runner)) {
        if (runner.twoArgumentOpen?.includes(option)) twoArgumentOpen = option;
        if (runner.ending?.includes(option) && attached) return undefined;
        if (runner.code.includes(option) && attached) codeGiven = true;
        if (takes(option) && !attached) valueNext = option;
      }
      continue;
    }
    if (runner.firstOperand === undefined) continue; // a tool: options decide, operands are data
    operands++;
    if (isCurrent && runner.codeFromOperand !== undefined && operands >= runner.codeFromOperand) {
      return `is an operand of ${program} after the ${runner.codeFromOperand - 1 === 1 ? "first" : `first ${runner.codeFromOperand - 1}`}, which is code ${program} runs (its commands run shell commands): quoting cannot protect it there`;
    }
    if (isCurrent && runner.plusCommands && !optionsDone) {
      return `is an operand of ${program} before --, where a value starting with + is a command ${program} runs: write -- before it`;
    }
    if (runner.firstOperand === "data") continue;
    if (operands === 1 && !codeGiven) {
      if (isCurrent) return runner.firstOperand === "code" ? `is the program ${program} runs: quoting cannot protect it there` : `is the script ${program} runs: a value must not choose the code`;
      codeGiven = true;
      if (runner.firstOperand === "script") optionsDone = true; // the script's own options follow
      continue;
    }
    if (isCurrent && twoArgumentOpen !== undefined) {
      return `is an operand of ${program} ${twoArgumentOpen}, which opens it with two-argument open (a name ending in | runs a command): use <<>> in a script of your own`;
    }
  }
  return undefined;
}

/** find's `-exec`/`-execdir`/`-ok`/`-okdir` run the words up to `;` or `+` as a command (no shell): the rules for programs apply to it. */
const FIND_EXEC = new Set(["-exec", "-execdir", "-ok", "-okdir"]);
const unquoted = (word: string) => word.replace(/['"\\]/g, "");

/** The rules for a whole command (wrappers, shells, interpreters): why a placeholder after `words` is refused. */
export type CommandRules = (words: readonly string[], current: string) => string | undefined;

function findExecRefusal(args: readonly string[], current: string, commandRules: CommandRules): string | undefined {
  let start = -1;
  for (let i = 0; i < args.length; i++) {
    if (start < 0 && FIND_EXEC.has(unquoted(args[i]!))) start = i + 1;
    else if (start >= 0 && (unquoted(args[i]!) === ";" || (args[i] === "+" && args[i - 1] === "{}"))) start = -1;
  }
  if (start < 0) return undefined;
  const command = args.slice(start);
  if (command.length === 0) return `is the program find ${args[start - 1]} runs: a value must not choose the command`;
  return commandRules(command, current);
}
