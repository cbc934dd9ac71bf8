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
