import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { argvToCommand, renderCommand, shellQuote } from "./remoteShell";

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
  it.each(SHELLS)("fills placeholders with values %s reads back literally", (shell) => {
    const values = Object.fromEntries(HOSTILE.map((v, i) => [`v${i}`, v]));
    const line = renderCommand(HOSTILE.map((_, i) => `{v${i}}`).join(" "), values);
    expect(parsedBy(shell, line)).toEqual(HOSTILE);
    expect(parsedBy(shell, renderCommand("--name={n} x{n}y", { n: "a b'c" }))).toEqual(["--name=a b'c", "xa b'cy"]);
  });

  it("keeps other braces literal and {{ }} as escapes", () => {
    expect(renderCommand("echo ${{HOME}} {{x}} {a,b} { not-a-placeholder }", {})).toBe("echo ${HOME} {x} {a,b} { not-a-placeholder }");
  });

  it("refuses placeholders where quoting cannot protect them", () => {
    const bad: Array<[string, RegExp]> = [
      [`echo "{x}"`, /inside "…" quotes/],
      [`echo '{x}'`, /inside '…' quotes/],
      [`echo \\{x}`, /after a backslash/],
      [`true # {x}`, /inside a # comment/],
      [`cat <<EOF\n{x}\nEOF`, /here-document/],
      [`echo {y}`, /no value for placeholder \{y\}/],
      [`echo "unterminated`, /unterminated/],
    ];
    for (const [template, message] of bad) {
      expect(() => renderCommand(template, { x: "$(touch /tmp/pwned)" })).toThrow(message);
    }
    // A # inside a word is not a comment; a placeholder after a finished quote is fine.
    expect(renderCommand(`echo a#b "q" {x}`, { x: "v w" })).toBe(`echo a#b "q" 'v w'`);
    expect(renderCommand("true # {{x}}\necho {x}", { x: "ok" })).toBe("true # {x}\necho ok");
  });
});
