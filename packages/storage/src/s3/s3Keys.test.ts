import { renderKey } from "../keyTemplate";
import { copySourceOf, normaliseS3Prefix, s3KeyOf, s3Uri } from "./s3Keys";

describe("s3 keys", () => {
  it("puts the prefix in front of a validated key, counting it in S3's 1,024 bytes", () => {
    expect(s3KeyOf("", "a//./b.txt")).toEqual({ key: "a/b.txt", objectKey: "a/b.txt" });
    expect(s3KeyOf("root/", "a b\nc.txt")).toEqual({ key: "a b\nc.txt", objectKey: "root/a b\nc.txt" });
    const key = `${"x".repeat(250)}/`.repeat(4) + "é".repeat(9); // 1,004 + 18 = 1,022 bytes
    expect(s3KeyOf("", key).objectKey).toBe(key);
    expect(() => s3KeyOf("abcd/", key)).toThrow(expect.objectContaining({ category: "invalid-key", message: expect.stringContaining("1027 bytes") }));
    for (const bad of ["../x", "a/../b", "/abs", "a\u0000b", "dir/"]) {
      expect(() => s3KeyOf("p/", bad)).toThrow(expect.objectContaining({ category: "invalid-key" }));
    }
  });

  it("normalises prefixes to '' or a folder ending with '/'", () => {
    expect(normaliseS3Prefix(undefined)).toBe("");
    expect(normaliseS3Prefix("/")).toBe("");
    expect(normaliseS3Prefix("a/b")).toBe("a/b/");
    expect(normaliseS3Prefix("/a//b/")).toBe("a/b/");
    expect(() => normaliseS3Prefix("a/../b")).toThrow(expect.objectContaining({ category: "invalid-key" }));
  });

  it("writes URIs and copy sources with each segment percent-encoded", () => {
    expect(s3Uri("bkt", "a b/ü#?.txt")).toBe("s3://bkt/a%20b/%C3%BC%23%3F.txt");
    expect(copySourceOf("bkt", "dir/a+b&c.txt")).toBe("bkt/dir/a%2Bb%26c.txt");
  });

  describe("renderKey", () => {
    it("substitutes fields verbatim; '/' in a value makes segments, empty segments vanish", () => {
      expect(renderKey("{owner}/{year}/{path}", { owner: "alice", year: "2024", path: "docs/report 1.pdf" })).toBe("alice/2024/docs/report 1.pdf");
      expect(renderKey("archive/{owner}/{path}", { owner: "", path: "x.txt" })).toBe("archive/x.txt");
      expect(renderKey("{path}", { path: "/lead//trail/" })).toBe("lead/trail");
      expect(renderKey("{a}-{b}.bin", { a: "{b}", b: "2" })).toBe("{b}-2.bin");
    });

    it("refuses a value that would make an invalid key, rather than altering it", () => {
      expect(() => renderKey("{owner}/{path}", { owner: "..", path: "x" })).toThrow(expect.objectContaining({ category: "invalid-key" }));
      expect(() => renderKey("{owner}/{path}", { owner: "a\tb", path: "x" })).toThrow(expect.objectContaining({ category: "invalid-key" }));
      expect(() => renderKey("{owner}", { owner: "" })).toThrow(expect.objectContaining({ category: "invalid-key" }));
    });

    it("treats an unknown field or a stray brace in the template as bad config", () => {
      expect(() => renderKey("{owner}/{path}", { path: "x" })).toThrow(expect.objectContaining({ category: "bad-config", message: expect.stringContaining("{owner}") }));
      expect(() => renderKey("{path", { path: "x" })).toThrow(expect.objectContaining({ category: "bad-config" }));
      expect(() => renderKey("a}/{path}", { path: "x" })).toThrow(expect.objectContaining({ category: "bad-config" }));
    });
  });
});
