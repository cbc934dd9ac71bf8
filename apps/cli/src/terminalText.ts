/**
 * Text for the operator's terminal. What Fleet prints holds text from outside: file names of a
 * source tree, consent records, messages jobs logged, remote commands' output, other operators'
 * reasons. A name holding ESC ] 52 … BEL could write the operator's clipboard, ESC [ 2 J clear
 * the screen, a carriage return or ESC [ 1 A hide the line before it, U+202E reorder what is
 * read. So control characters (C0 but newline and tab, DEL, C1) and the bidirectional
 * overrides are printed escaped (`\x1b`, `\u202e`), as `ls` shows them as `?`; `--json`
 * output escapes C0 already (JSON), and C1 and the overrides go through this too.
 */
export function terminalSafe(text: string): string {
  return text.replace(UNSAFE, (c) => {
    const code = c.codePointAt(0)!;
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** terminalSafe, and one line: newline and tab escaped too (a field of a one-line entry). */
export function oneLine(text: string): string {
  return terminalSafe(text).replace(/\n/g, "\\n").replace(/\t/g, "\\t");
}

/**
 * One value as JSON for the terminal or a pipe: JSON.stringify escapes C0 but leaves DEL, C1
 * and the bidirectional overrides as they are; those go as `\u009b`, which JSON reads back as
 * the same character (terminalSafe's `\x9b` would not be JSON).
 */
export function jsonText(value: unknown): string {
  return JSON.stringify(value).replace(UNSAFE, (c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, "0")}`);
}
