import { BoundedOutput } from "./remoteOutput";

describe("BoundedOutput", () => {
  it("keeps everything under the limit", () => {
    const out = new BoundedOutput(100);
    out.push(Buffer.from("hello "));
    out.push(Buffer.from("world"));
    expect([out.text(), out.truncated, out.total]).toEqual(["hello world", false, 11]);
  });

  it("keeps the head and the tail of a long stream, whatever the chunking", () => {
    const text = Array.from({ length: 1000 }, (_, i) => `line ${i}\n`).join("");
    for (const chunk of [1, 7, 64, 5000]) {
      const out = new BoundedOutput(200);
      for (let i = 0; i < text.length; i += chunk) out.push(Buffer.from(text.slice(i, i + chunk)));
      expect(out.truncated).toBe(true);
      expect(out.total).toBe(text.length);
      const kept = out.text();
      expect(kept.startsWith(text.slice(0, 100))).toBe(true);
      expect(kept.endsWith(text.slice(-100))).toBe(true);
      expect(kept).toContain(`[${text.length - 200} bytes omitted]`);
    }
  });
});
