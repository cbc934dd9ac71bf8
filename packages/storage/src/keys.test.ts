import { PermanentError } from "@fleet/core/errors";
import { baseName, parentKey, validateKey, validatePrefix } from "./keys";
import { createTempNamer, isTempName, tempNameOwner, unguessableTempName } from "./tempNames";

function rejection(key: string): PermanentError {
  try {
    validateKey(key);
  } catch (err) {
    expect(err).toBeInstanceOf(PermanentError);
    expect((err as PermanentError).category).toBe("invalid-key");
    return err as PermanentError;
  }
  throw new Error(`expected ${JSON.stringify(key)} to be rejected`);
}

describe("validateKey", () => {
  it.each([
    ["a", "a"],
    ["alice/2024/report.pdf", "alice/2024/report.pdf"],
    ["./a/b", "a/b"],
    ["././a", "a"],
    ["a//b///c", "a/b/c"],
    ["a/./b", "a/b"],
    ["with space/and  two.txt", "with space/and  two.txt"],
    ["ünïcödé/日本語/😀.txt", "ünïcödé/日本語/😀.txt"],
    ["line\nbreak.txt", "line\nbreak.txt"],
    [".hidden", ".hidden"],
    ["...", "..."],
    ["a..b/..c", "a..b/..c"],
    ["x:y/C:", "x:y/C:"],
    ["%41#?&.txt", "%41#?&.txt"],
  ])("accepts %j as %j", (key, normalised) => {
    expect(validateKey(key)).toBe(normalised);
  });

  it.each([
    ["", "is empty"],
    [".", "names no object"],
    ["./", "ends with '/'"],
    ["a/", "ends with '/'"],
    ["/x", "is absolute"],
    ["/etc/passwd", "is absolute"],
    ["//server/share", "is absolute"],
    ["C:\\x", "backslash"],
    ["\\\\server\\share", "backslash"],
    ["a\\b", "backslash"],
    ["C:/x", "drive letter"],
    ["C:", "drive letter"],
    ["..", "'..'"],
    ["../x", "'..'"],
    ["a/../../x", "'..'"],
    ["a/../b", "'..'"],
    ["a/..", "'..'"],
    ["nul\u0000byte", "U+0000"],
    ["tab\there", "U+0009"],
    ["cr\rhere", "U+000d"],
    ["esc\u001b[0m", "U+001b"],
    ["del\u007f", "U+007f"],
    ["c1\u0085", "U+0085"],
    ["lone\ud800surrogate", "U+d800"],
    ["a/.b.fleet-1a2b3c4d5e6.tmp", "reserved"],
  ])("rejects %j (%s)", (key, reason) => {
    expect(rejection(key).message).toContain(reason);
  });

  it("bounds a segment at 255 bytes, counting UTF-8 bytes", () => {
    expect(validateKey("a".repeat(255))).toHaveLength(255);
    expect(rejection("a".repeat(256)).message).toContain("255 bytes");
    // 86 × 3 bytes = 258 bytes in 86 characters.
    expect(rejection("€".repeat(86)).message).toContain("255 bytes");
  });

  it("bounds a key at 1024 bytes after normalisation", () => {
    const segment = "s".repeat(200);
    const key1024 = [segment, segment, segment, segment, "x".repeat(220)].join("/");
    expect(Buffer.byteLength(key1024)).toBe(1024);
    expect(validateKey(key1024)).toBe(key1024);
    expect(validateKey(`./${key1024.replace("/", "//")}`)).toBe(key1024);
    expect(rejection(`${key1024}x`).message).toContain("1024 bytes");
  });

  it("quotes and shortens the key in messages", () => {
    const message = rejection(`${"x".repeat(500)}\u0000`).message;
    expect(message.length).toBeLessThan(300);
    expect(rejection("a\u0000b").message).toContain('"a\\u0000b"');
  });
});

describe("validatePrefix", () => {
  it("keeps a trailing slash and validates the rest", () => {
    expect(validatePrefix("")).toBe("");
    expect(validatePrefix("a/")).toBe("a/");
    expect(validatePrefix("./a//b")).toBe("a/b");
    expect(() => validatePrefix("../")).toThrow(PermanentError);
    expect(() => validatePrefix("/abs")).toThrow(PermanentError);
  });
});

describe("key parts", () => {
  it("splits parent and name", () => {
    expect(parentKey("a/b/c")).toBe("a/b");
    expect(parentKey("c")).toBe("");
    expect(baseName("a/b/c")).toBe("c");
    expect(baseName("c")).toBe("c");
  });
});

describe("temp names", () => {
  it("are unique, recognised, and stay under 255 bytes for any name", () => {
    const namer = createTempNamer();
    const names = new Set(Array.from({ length: 1000 }, () => namer("file.txt")));
    expect(names.size).toBe(1000);
    for (const name of names) expect(isTempName(name)).toBe(true);
    const long = namer("é".repeat(127));
    expect(isTempName(long)).toBe(true);
    expect(Buffer.byteLength(long)).toBeLessThanOrEqual(255);
    expect(isTempName(namer("multi\nline"))).toBe(true);
    expect(isTempName("file.txt")).toBe(false);
    expect(isTempName(".file.fleet-.tmp")).toBe(false);
    // A user's own file that merely looks like one (no 10-hex writer token) is an object.
    expect(isTempName(".notes.fleet-2024.tmp")).toBe(false);
    // The retry name after a planted collision: still ours (the sweep knows its writer), not guessable.
    const random = unguessableTempName("file.txt");
    expect(isTempName(random)).toBe(true);
    expect(tempNameOwner(random)).toBe(tempNameOwner(namer("file.txt")));
    expect(unguessableTempName("file.txt")).not.toBe(random);
  });
});
