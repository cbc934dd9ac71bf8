import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { argvToCommand, checkCommandTemplate, renderCommand, shellQuote } from "./remoteShell";

// The remote side is a POSIX login shell: check what dash and bash read back, locally.
const SHELLS = ["/bin/sh", "/bin/bash"].filter((s) => existsSync(s));

/** argv as the shell parses `line`: printf prints each argument NUL-terminated. */
function parsedBy(shell: string, line: string): string[] {
  const out = execFileSync(shell, ["-c", `printf '%s\\0' ${line}`], { encoding: "utf8" });
  return out.split("\0").slice(0, -1);
}

const HOSTILE = [
  "; rm -rf /",
  "$(touch /tmp/pwned-quote-test)",
  "`touch /tmp/pwned-quote-test`",
  "it's",
  "'",
  "''",
  `"double" \\"escaped\\"`,
  "back\\slash\\",
  "new\nline",
  "tab\there",
  "$HOME ${PATH} $1 $$ $? !! !-1",
  "*?[a]{b,c}~",
  "~root",
  "#comment",
  "a=b",
  "-rf",
  "",
  " leading and trailing ",
  "ünïcødé ✓ 日本語 🎉",
  "| & ; < > ( ) &&||",
];

describe("shellQuote", () => {
  it.each(SHELLS)("makes every argument reach %s literally", (shell) => {
    expect(parsedBy(shell, HOSTILE.map(shellQuote).join(" "))).toEqual(HOSTILE);
    expect(existsSync("/tmp/pwned-quote-test")).toBe(false);
  });

  it("quotes with single quotes and '\\'' and leaves plain words bare", () => {
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(shellQuote("/srv/data/file-1.txt")).toBe("/srv/data/file-1.txt");
    expect(shellQuote("")).toBe("''");
    expect(shellQuote("a=b")).toBe("'a=b'");
    expect(() => shellQuote("nul\0byte")).toThrow(/NUL/);
    expect(() => argvToCommand([])).toThrow(/program name/);
  });
});

describe("renderCommand", () => {
  it.each(SHELLS)("fills placeholders with values %s reads back literally (after --, so leading dashes are data)", (shell) => {
    const values = Object.fromEntries(HOSTILE.map((v, i) => [`v${i}`, v]));
    const line = renderCommand(`printf '%s\\0' -- ${HOSTILE.map((_, i) => `{v${i}}`).join(" ")}`, values);
    expect(execFileSync(shell, ["-c", line], { encoding: "utf8" }).split("\0").slice(1, -1)).toEqual(HOSTILE);
    expect(parsedBy(shell, renderCommand("x --name={n} x{n}y", { n: "a b'c" }))).toEqual(["x", "--name=a b'c", "xa b'cy"]);
  });

  it("quotes every value, plain words too, and keeps other braces literal and {{ }} as escapes", () => {
    expect(renderCommand("echo {a} ${{HOME}} {{x}} {a,b} { not-a-placeholder }", { a: "plain" })).toBe("echo 'plain' ${HOME} {x} {a,b} { not-a-placeholder }");
  });

  it("refuses placeholders where quoting cannot protect them, when the template is compiled", () => {
    const bad: Array<[string, RegExp]> = [
      [`echo "{x}"`, /inside "…" quotes/],
      [`echo '{x}'`, /inside '…' quotes/],
      [`echo \\{x}`, /after a backslash/],
      [`true # {x}`, /inside a # comment/],
      [`cat <<EOF\n{x}\nEOF`, /here-document/],
      ["echo `basename {x}`", /inside `…` backquotes/],
      ["echo \"`basename {x}`\"", /inside `…` backquotes/],
      [`echo $(basename {x})`, /inside \$\(…\)/],
      [`echo "$(basename {x})"`, /inside \$\(…\)/],
      [`echo $(( {x} + 1 ))`, /arithmetic|inside \$\(…\)/],
      [`(( {x} ))`, /arithmetic/],
      [`echo \${{x:-{x}}}`, /inside \$\{…\}/],
      [`echo $[{x}]`, /\$\[…\]/],
      [`diff <(cat {x}) b`, /inside <\(…\)/],
      ["echo ${x}", /right after a \$/],
      [`{x} --help`, /the program to run/],
      [`X=1 {x}`, /the program to run/],
      [`cd /; ./{x}`, /the program to run/],
      [`eval echo {x}`, /argument of eval/],
      [`sh -c {x}`, /argument of sh/],
      [`ssh other ls {x}`, /argument of ssh/],
      [`declare {x}=1`, /starts an argument of declare/],
      [`printf -v {x} %s y`, /starts an argument of printf/],
      [`echo "unterminated`, /unterminated/],
      ["echo `unterminated", /unterminated construct/],
    ];
    for (const [template, message] of bad) {
      expect(() => checkCommandTemplate(template)).toThrow(message);
      expect(() => renderCommand(template, { x: "$(touch /tmp/pwned)" })).toThrow(message);
    }
    // Quoting protects these: an argument after a finished quote or subshell, a redirection
    // target, an assignment's value, a variable name's value, `2>&1` before `--`.
    expect(renderCommand(`echo a#b "q" {x}`, { x: "v w" })).toBe(`echo a#b "q" 'v w'`);
    expect(renderCommand("true # {{x}}\necho {x}", { x: "ok" })).toBe("true # {x}\necho 'ok'");
    expect(renderCommand("(cd /tmp && ls -- {x}) > {x}.txt", { x: "d" })).toBe("(cd /tmp && ls -- 'd') > 'd'.txt");
    expect(renderCommand("X={x} env; export Y={x}", { x: "$(no)" })).toBe("X='$(no)' env; export Y='$(no)'");
    expect(renderCommand("if [ -d {x} ]; then du -sb -- {x} 2>&1; fi", { x: "/srv" })).toBe("if [ -d '/srv' ]; then du -sb -- '/srv' 2>&1; fi");
    expect(() => renderCommand(`echo {y}`, {})).toThrow(/no value for placeholder \{y\}/);
    expect(() => renderCommand(`echo {x}`, { constructor: "x" } as Record<string, string>)).toThrow(/no value for placeholder \{x\}/);
  });

  it("refuses a value as an operand of [[ … ]] arithmetic, assigned to an integer variable, or as the program behind a wrapper (security review)", () => {
    const marker = `/tmp/pwned-template-${process.pid}`;
    const payload = `a[$(touch ${marker})]`;
    // What these templates let a value do before: bash evaluates `[[ 'a[$(cmd)]' -gt 0 ]]`'s
    // operands as arithmetic, running cmd; a wrapper made the value the program or handed it to a shell.
    if (existsSync("/bin/bash")) {
      execFileSync("/bin/bash", ["-c", `[[ ${shellQuote(payload)} -gt 0 ]] || true`]);
      expect(existsSync(marker)).toBe(true);
      execFileSync("rm", ["-f", marker]);
    }
    const bad: Array<[string, RegExp]> = [
      ["[[ {n} -gt 0 ]] && echo big", /operand of \[\[ … \]\] with an arithmetic comparison/],
      ["if [[ 0 -lt {n} ]]; then echo; fi", /arithmetic comparison/],
      ["declare -i n=0; n={n}", /declares integer variables/],
      ["exec {x}", /the program exec runs/],
      ["command {x}", /the program command runs/],
      ["coproc {x}", /the program coproc runs/],
      ["nohup {x} &", /the program nohup runs/],
      ["xargs {x}", /the program xargs runs/],
      ["time -p {x}", /the program time runs/],
      ["sudo -u app {x}", /the program sudo runs/],
      ["sudo --user app {x}", /the program sudo runs/],
      ["timeout 5 {x}", /the program timeout runs/],
      ["sudo -{x} ls", /an option of sudo/],
      ["sudo -u app sh -c {x}", /argument of sh/],
      ["/usr/bin/env LANG=C bash -c {x}", /argument of bash/],
      ["timeout 10 ssh other du -sb {x}", /argument of ssh/],
      ["sudo env timeout 5 bash -c {x}", /argument of bash/],
      ["nice -n 5 eval {x}", /argument of eval/],
      ["sudo -s ls {x}", /sudo -s, which hands it to a shell/],
      ["flock /tmp/l -c {x}", /flock -c/],
      ["env -S {x}", /env -S/],
      ["command declare {x}=1", /starts an argument of declare/],
      ["find /srv -maxdepth 0 -exec sh -c {x} \\;", /comes after sh in the same command/],
      ["rsync -a -e ssh /src {x}", /comes after ssh in the same command/],
      ["docker exec box bash -c {x}", /comes after bash in the same command/],
      // Quoting the program's name does not change what the shell runs.
      ["'sh' -c {x}", /argument of sh/],
      ["e''val echo {x}", /argument of eval/],
      ["\\eval echo {x}", /argument of eval/],
      [`"sudo" sh -c {x}`, /argument of sh/],
      [`s""udo -u app {x}`, /the program sudo runs/],
    ];
    for (const [template, message] of bad) {
      expect(() => checkCommandTemplate(template)).toThrow(message);
      expect(() => renderCommand(template, { n: payload, x: payload })).toThrow(message);
    }
    expect(existsSync(marker)).toBe(false);
  });

  it("refuses a template that evaluates arithmetic on a variable or parameter, where a value reaches it through a variable", () => {
    // A value assigned to a variable (or a loop variable, printf -v, a function's argument) is
    // evaluated as an expression wherever bash does arithmetic on that variable — array
    // subscripts in it as code — however it was quoted when assigned. Each of these ran the
    // payload's command in real bash before; the checks of a placeholder's own position saw nothing.
    const marker = `/tmp/pwned-template-arith-${process.pid}`;
    const payload = `a[$(touch ${marker})]`;
    const bad = [
      "x={n}; echo $((x + 1))",
      "x={n}; echo $(( $x ))",
      "x={n}; (( x > 0 )) && echo big",
      "x={n}; echo $[x]",
      "x={n}; [[ $x -gt 0 ]] && echo big",
      "x={n}; [[ x -gt 0 ]] && echo big",
      "x={n}; [[ -n $x && $x -gt 0 ]] && echo big",
      "x={n}; let y=x",
      "x={n}; command let y=x",
      "x={n}; arr[x]=1",
      "x={n}; declare arr[$x]=1",
      "x={n}; arr=(1); echo ${arr[$x]}",
      "x={n}; s=abc; echo ${s:x}",
      "for x in {n}; do echo $((x)); done",
      "printf -v x %s {n}; echo $((x))",
      "f() { echo $(( $1 + 1 )); }; f {n}",
      "declare -i y; for y in {n}; do :; done",
    ];
    const REFUSED = /evaluates arithmetic on a variable or parameter|declares integer variables/;
    const outcome = (check: () => unknown) => {
      try {
        check();
        return "accepted";
      } catch (err) {
        return REFUSED.test((err as Error).message) ? "refused" : (err as Error).message;
      }
    };
    expect(bad.map((t) => [t, outcome(() => checkCommandTemplate(t)), outcome(() => renderCommand(t, { n: payload }))])).toEqual(bad.map((t) => [t, "refused", "refused"]));
    // That each is a real attack: the same template, filled by hand as the renderer would, runs it.
    if (existsSync("/bin/bash")) {
      for (const template of bad) {
        execFileSync("/bin/bash", ["-c", `${template.replaceAll("{n}", shellQuote(payload))} 2>/dev/null || true`]);
        expect([template, existsSync(marker)]).toEqual([template, true]);
        execFileSync("rm", ["-f", marker]);
      }
    }
    // Arithmetic on literal numbers, parameter expansions that do none, and templates without
    // placeholders stay allowed.
    for (const template of [
      "sleep $((2 * 60)); du -sb -- {n}",
      "x={n}; printf '%s\\0' \"${x:-none}\" \"${x#a}\" \"${x:0:1}\" \"${#x}\" \"${@:2}\"",
      "printf '%s\\0' {n} \"${BASH_VERSINFO[@]}\" \"${#BASH_VERSINFO[*]}\" \"${PATH:0:4}\"",
      "[ {n} -gt 0 ] && echo big",
      "n=$(nproc); echo $((n * 2))",
    ]) {
      expect([template, outcome(() => checkCommandTemplate(template))]).toEqual([template, "accepted"]);
    }
  });

  it("refuses a template that takes a variable's value as a variable's name, where a value reaches it through a variable", () => {
    // The arithmetic rule's twin: bash evaluates an array subscript in a variable *name* as
    // arithmetic, `$(…)` in it included, and these take a name from a variable's value. A
    // placeholder directly there was refused (`printf -v {n}`, `declare {n}`); through a
    // variable each of these ran the payload's command (found by review).
    const marker = `/tmp/pwned-template-name-${process.pid}`;
    const payload = `a[$(touch ${marker})]`;
    const bad = [
      'x={n}; echo "${!x}"',
      'x={n}; echo "${!x:-none}"',
      "x={n}; [[ -v $x ]] && echo set",
      'x={n}; test -v "$x" && echo set',
      'x={n}; [ -v "$x" ] && echo set',
      'x={n}; printf -v "$x" %s 1',
      'x={n}; read -r "$x" < /dev/null',
      'x={n}; declare "$x"=1',
      'x={n}; declare -n r="$x"; echo "$r"',
      'f() { local -n r=$1; echo "$r"; }; f {n}',
      'for x in {n}; do echo "${!x}"; done',
    ];
    const REFUSED = /takes a variable's value as a variable's name/;
    const outcome = (check: () => unknown) => {
      try {
        check();
        return "accepted";
      } catch (err) {
        return REFUSED.test((err as Error).message) ? "refused" : (err as Error).message;
      }
    };
    expect(bad.map((t) => [t, outcome(() => checkCommandTemplate(t)), outcome(() => renderCommand(t, { n: payload }))])).toEqual(bad.map((t) => [t, "refused", "refused"]));
    // That each is a real attack: the same template, filled by hand as the renderer would, runs it.
    if (existsSync("/bin/bash")) {
      for (const template of bad) {
        execFileSync("/bin/bash", ["-c", `${template.replaceAll("{n}", shellQuote(payload))} 2>/dev/null || true`]);
        expect([template, existsSync(marker)]).toEqual([template, true]);
        execFileSync("rm", ["-f", marker]);
      }
    }
    // Names written literally, name listings and values (not names) from expansions stay allowed.
    for (const template of [
      'echo "${!FLEET_*}" "${!BASH_VERSINFO[@]}" {n}',
      'sleep 0 & echo "${!}" {n}',
      'read -r -p "$PS1" -u "$fd" line < {n}',
      'mapfile -t -u "$fd" lines; echo {n}',
      'export PATH="$PATH:/opt/bin"; du -sb -- {n}',
      'printf -v out %s "$HOME"; echo "$out" {n}',
      'test -v HOME && echo {n}',
      'x="$1"; declare -a arr=("$@"); readonly DIR="$HOME/x"; ls -- {n}',
    ]) {
      expect([template, outcome(() => checkCommandTemplate(template))]).toEqual([template, "accepted"]);
    }
  });

  it("refuses a value as the code an interpreter or tool runs, through any wrapper and find -exec (security review)", () => {
    const marker = `/tmp/pwned-interpreter-${process.pid}`;
    // What these templates let a value do before: single quotes keep it one argument, and the
    // interpreter runs that argument as code.
    const demos: Array<[string, string]> = [
      ["python3 -c {x}", `__import__('os').system('touch ${marker}')`],
      ["perl -e {x}", `system("touch ${marker}")`],
      ["awk {x}", `BEGIN {system("touch ${marker}")}`],
      ["sed -n -e {x} /dev/null", `1e touch ${marker}`],
      ["find /dev/null -exec {x} ;", `/usr/bin/touch`],
    ];
    for (const [template, payload] of demos) {
      const program = template.split(" ")[0]!;
      if (execFileSync("/bin/sh", ["-c", `command -v ${program} || true`], { encoding: "utf8" }) === "") continue;
      const line = template.replace("{x}", shellQuote(payload)).replace(" ;", ` ${marker} ';'`);
      execFileSync("/bin/sh", ["-c", program === "sed" ? `echo | sed -n -e ${shellQuote(payload)}` : line], { stdio: "ignore" });
      expect([template, existsSync(marker)]).toEqual([template, true]);
      execFileSync("rm", ["-f", marker]);
    }
    const bad: Array<[string, RegExp]> = [
      ["python3 -c {x}", /value of python3 -c, which is code python3 runs/],
      ["python -Ic {x}", /value of python -c/],
      ["python3.12 -c {x}", /value of python3.12 -c/],
      ["python3 {x}", /is the script python3 runs/],
      ["python3 -- {x}", /is the script python3 runs/],
      ["python3 -m {x}", /names the module python3 -m runs/],
      ["python3 -{x}", /part of\) an option of python3/],
      ["perl -e {x}", /value of perl -e/],
      ["perl -E {x}", /value of perl -E/],
      ["perl -lne {x}", /value of perl -e/],
      ["perl -M{x} -e 1", /part of\) the code perl -M runs/],
      ["perl -ne 'print' {x}", /operand of perl -n, which opens it with two-argument open/],
      ["ruby -e {x}", /value of ruby -e/],
      ["node -e {x}", /value of node -e/],
      ["node -p {x}", /value of node -p/],
      ["node --eval={x}", /part of\) the code node --eval runs/],
      ["node --require {x} app.js", /value of node --require/],
      ["php -r {x}", /value of php -r/],
      ["lua -e {x}", /value of lua -e/],
      ["awk {x}", /is the program awk runs/],
      ["gawk -F: {x} /etc/passwd", /is the program gawk runs/],
      ["awk -f {x} data", /value of awk -f/],
      ["sed -e {x} file", /value of sed -e/],
      ["sed {x} file", /is the program sed runs/],
      ["sed -n s/a/{x}/p file", /is the program sed runs/],
      ["tar -cf a.tar --to-command={x} .", /the code tar --to-command runs/],
      ["tar -I {x} -cf a.tar .", /value of tar -I/],
      ["rsync -e {x} a b", /value of rsync -e/],
      ["git -c {x} log", /value of git -c/],
      ["zip a.zip b -T -TT {x}", /value of zip -TT/],
      ["find /srv -exec {x} \\;", /is the program find -exec runs/],
      ["find /srv -execdir {x} {{}} +", /is the program find -execdir runs/],
      ["find /srv -exec python3 -c {x} \\;", /value of python3 -c/],
      ["find /srv -exec sudo -u app {x} \\;", /the program sudo runs/],
      // Wrappers are looked through to the interpreter they run.
      ["env python3 -c {x}", /value of python3 -c/],
      ["nice -n 5 perl -e {x}", /value of perl -e/],
      ["nohup ruby -e {x} &", /value of ruby -e/],
      ["stdbuf -o0 node -e {x}", /value of node -e/],
      ["ionice -c3 php -r {x}", /value of php -r/],
      ["chroot /srv awk {x}", /is the program awk runs/],
      ["setsid sed -e {x}", /value of sed -e/],
      ["timeout 5 /usr/bin/python3 -c {x}", /value of python3 -c/],
      ["sudo -u app xargs perl -e {x}", /value of perl -e/],
    ];
    for (const [template, message] of bad) {
      expect(() => checkCommandTemplate(template)).toThrow(message);
      expect(() => renderCommand(template, { x: "1" })).toThrow(message);
    }
  });

  it("refuses a value as the commands of a database shell, an editor or a debugger, whose commands run shell commands (review)", () => {
    // psql's `\!`, mysql's `system`, sqlite3's `.shell`, vim's `:!`, gdb's `shell`: each of
    // these ran a value as a shell command like `python3 -c {x}`, and was accepted.
    const marker = `/tmp/pwned-dbshell-${process.pid}`;
    const demos: Array<[string, string, string]> = [
      ["sqlite3", "sqlite3 :memory: {x}", `.shell touch ${marker}`],
      ["vim", "vim -es -c {x} -c 'q!'", `!touch ${marker}`],
      ["vim", "vim -es {x} -c 'q!'", `+!touch ${marker}`],
      ["gdb", "gdb -batch -nx -ex {x}", `shell touch ${marker}`],
    ];
    for (const [program, template, payload] of demos) {
      if (execFileSync("/bin/sh", ["-c", `command -v ${program} || true`], { encoding: "utf8" }) === "") continue;
      execFileSync("/bin/sh", ["-c", `${template.replace("{x}", shellQuote(payload))} </dev/null >/dev/null 2>&1 || true`], { timeout: 20_000 });
      expect([template, existsSync(marker)]).toEqual([template, true]);
      execFileSync("rm", ["-f", marker]);
    }
    const bad: Array<[string, RegExp]> = [
      ["psql -c {x}", /value of psql -c, which is code psql runs/],
      ["psql -d app -Xqc {x}", /value of psql -c/],
      ["psql --command={x}", /the code psql --command runs/],
      ["psql -f {x}", /value of psql -f/],
      ["mysql -e {x}", /value of mysql -e/],
      ["mariadb --execute={x}", /the code mariadb --execute runs/],
      ["sqlite3 /srv/app.db {x}", /operand of sqlite3 after the first, which is code/],
      ["sqlite3 -cmd {x} /srv/app.db", /value of sqlite3 -cmd/],
      ["vim -es -c {x} file", /value of vim -c/],
      ["ex -s {x}", /operand of ex before --, where a value starting with \+ is a command/],
      ["gdb -batch -ex {x}", /value of gdb -ex/],
      ["sudo -u postgres psql -c {x}", /value of psql -c/],
    ];
    for (const [template, message] of bad) {
      expect(() => checkCommandTemplate(template)).toThrow(message);
    }
    // Their data stays fillable: names of databases, users, files after --, options' values.
    for (const template of [
      "psql -d {db} -U {user} -v name={x} -c 'select 1'",
      "psql {db}",
      "mysql -u {user} -D {db} -e 'show tables'",
      "sqlite3 -separator , {db} .tables",
      "vim -es -c '%s/a/b/|x' -- {file}",
      "gdb -batch -ex bt -p {pid}",
    ]) {
      expect(() => checkCommandTemplate(template)).not.toThrow();
    }
  });

  it.each(SHELLS)("still fills arguments of interpreters and tools after their code, which %s hands over literally", (shell) => {
    // Each prints its argument followed by a NUL (the code is the template's own).
    const accepted = [
      "python3 -c 'import sys; sys.stdout.write(sys.argv[1] + chr(0))' {x}",
      "perl -e 'print $ARGV[0], chr(0)' {x}",
      "awk 'BEGIN {{ printf \"%s%c\", ARGV[1], 0 }}' {x}",
      "env LANG=C awk -v v={x} 'BEGIN {{ printf \"%s%c\", v, 0 }}'",
      "printf '%s\\0' {x} | sed -n p",
      "find /dev/null -maxdepth 0 -exec printf '%s\\0' {x} \\;",
    ];
    for (const template of accepted) {
      const program = template.replace(/^env LANG=C /, "").split(" ")[0]!;
      if (program !== "printf" && execFileSync("/bin/sh", ["-c", `command -v ${program} || true`], { encoding: "utf8" }) === "") continue;
      // awk -v processes backslash escapes: only values without them there.
      for (const value of HOSTILE.filter((v) => v !== "" && !v.startsWith("-") && !(template.includes("-v v=") && v.includes("\\")))) {
        const out = execFileSync(shell, ["-c", renderCommand(template, { x: value })], { encoding: "utf8" });
        expect([template, out.split("\0").slice(0, -1)]).toEqual([template, [value]]);
      }
    }
    for (const template of ["python3 /opt/report.py -- {x}", "python3 -m report {x}", "perl -- /opt/r.pl {x}", "node --title={x} app.js", "sed -n 1p -- {x}", "awk -F{x} '{{print}}' f", "tar -C {x} -cf - .", "tar --exclude={x} -cf a.tar .", "rsync -a -- {x} /dst/", "git -C {x} log", "find {x} -name a -exec rm -- {{}} +"]) {
      expect(() => checkCommandTemplate(template)).not.toThrow();
    }
    expect(existsSync("/tmp/pwned-quote-test")).toBe(false);
  });

  it.each(SHELLS)("still fills wrapped commands and string tests, which %s reads back literally", (shell) => {
    const accepted = [
      "env LANG=C printf '%s\\0' -- {x}",
      "timeout 5 printf '%s\\0' -- {x}",
      "nice -n 5 printf '%s\\0' -- {x}",
      "command printf '%s\\0' -- {x}",
      "time printf '%s\\0' -- {x}",
      "[ {x} = b ] || printf '%s\\0' -- {x}",
    ];
    const bashOnly = ["[[ {x} == b ]] || printf '%s\\0' -- {x}", "[[ -n {x} ]] && printf '%s\\0' -- {x}"];
    for (const template of shell.endsWith("bash") ? [...accepted, ...bashOnly] : accepted) {
      for (const value of HOSTILE.filter((v) => v !== "" && !v.startsWith("-"))) {
        const out = execFileSync(shell, ["-c", renderCommand(template, { x: value })], { encoding: "utf8" });
        // printf prints the `--` after its format as an argument.
        expect([template, out.split("\0").slice(0, -1)]).toEqual([template, ["--", value]]);
      }
    }
    expect(renderCommand("command -v {name} >/dev/null 2>&1", { name: "$(id)" })).toBe("command -v '$(id)' >/dev/null 2>&1");
    expect(renderCommand("sudo -u {user} /opt/export.sh -- {x}", { user: "app", x: "p" })).toBe("sudo -u 'app' /opt/export.sh -- 'p'");
    expect(existsSync("/tmp/pwned-quote-test")).toBe(false);
  });

  it("refuses a NUL byte and an option-like value unless the template put -- before it", () => {
    expect(() => renderCommand("rm -r -- {p}", { p: "a\0b" })).toThrow(/contains a NUL byte/);
    expect(() => renderCommand("rm -r {p}", { p: "-rf" })).toThrow(/starts with '-' and would be read as an option; put -- before the placeholder/);
    expect(() => renderCommand("rm -r '' {p}", { p: "--no-preserve-root" })).toThrow(/starts with '-'/);
    expect(renderCommand("rm -r -- {p}", { p: "-rf" })).toBe("rm -r -- '-rf'");
    expect(renderCommand("ls ./{p} --color={p}", { p: "-l" })).toBe("ls ./'-l' --color='-l'");
    // `--` ends options for one command only.
    expect(() => renderCommand("rm -- {a} | grep {p}", { a: "x", p: "-v" })).toThrow(/starts with '-'/);
  });
});
