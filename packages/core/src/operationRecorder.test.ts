import { historyText, summarizeForHistory } from "./operationRecorder";

describe("what the operation history stores of a string", () => {
  it("keeps ordinary text as it is, emoji and all", () => {
    const text = "copy: résumé 😀.pdf timed out";
    expect(historyText(text)).toBe(text);
  });

  it("replaces NUL and lone surrogates, which PostgreSQL cannot store, with U+FFFD", () => {
    expect(historyText("a\u0000b")).toBe("a\uFFFDb");
    expect(historyText("x\ud83dy\udc00z")).toBe("x\uFFFDy\uFFFDz");
    expect(historyText("pair 😀 then half \ud83d")).toBe("pair 😀 then half \uFFFD");
  });

  it("cuts long strings outside a surrogate pair, and cleans keys and nested values", () => {
    expect(summarizeForHistory(`${"a".repeat(499)}😀tail`)).toBe(`${"a".repeat(499)}…`);
    expect(summarizeForHistory(`${"a".repeat(498)}😀tail`)).toBe(`${"a".repeat(498)}😀…`);
    expect(summarizeForHistory({ "k\u0000": ["v\ud800"], password: "\u0000" })).toEqual({ "k\uFFFD": ["v\uFFFD"], password: "[redacted]" });
  });
});
