import { ConfigError } from "@fleet/core/errors";
import { signWebhook, verifyWebhook, webhookUrlProblem } from "@fleet/core/webhookSignature";
import { JOB_NAMES } from "../contracts";
import { toWebhookSettings } from "./webhookSettings";

describe("webhook settings", () => {
  it("matches the allow-list by scheme, host, port and a path prefix at a segment boundary", () => {
    const allowed = ["https://h.example/hooks", "http://127.0.0.1:8080/"];
    expect(webhookUrlProblem("https://h.example/hooks", allowed)).toBeUndefined();
    expect(webhookUrlProblem("https://h.example/hooks/a?x=1", allowed)).toBeUndefined();
    expect(webhookUrlProblem("http://127.0.0.1:8080/anything", allowed)).toBeUndefined();
    expect(webhookUrlProblem("https://h.example/hooksy", allowed)).toMatch(/not in WEBHOOK_ALLOWED_URLS/);
    expect(webhookUrlProblem("https://h.example:444/hooks", allowed)).toMatch(/not in WEBHOOK_ALLOWED_URLS/);
    expect(webhookUrlProblem("http://127.0.0.1:8081/", allowed)).toMatch(/not in WEBHOOK_ALLOWED_URLS/);
    expect(webhookUrlProblem("https://h.example/hooks", [])).toMatch(/not enabled/);
    // Encoded separators a server may decode and resolve out of the allowed prefix.
    // (A whole encoded segment, `/hooks/%2E%2E/admin`, is resolved by the URL parser itself to /admin: not in the list.)
    expect(webhookUrlProblem("https://h.example/hooks/%2E%2E/admin", allowed)).toMatch(/^https:\/\/h\.example\/admin is not in WEBHOOK_ALLOWED_URLS$/);
    for (const url of ["https://h.example/hooks/..%2fadmin", "https://h.example/hooks/%2e.%2Fadmin", "https://h.example/hooks/..%5Cadmin"]) {
      expect([url, webhookUrlProblem(url, allowed)]).toEqual([url, expect.stringMatching(/^encoded '\/', '\\' or '\.' in the path are not allowed$/)]);
    }
  });

  it("refuses WEBHOOK_JOBS outside the allow-list, unknown job names, and an allow-list without a secret", () => {
    const issues = (() => {
      try {
        toWebhookSettings({ WEBHOOK_ALLOWED_URLS: ["https://h.example/hooks"], WEBHOOK_JOBS: "seed-ranges=https://other.example/x nope=https://h.example/hooks bad" }, JOB_NAMES);
      } catch (err) {
        return (err as ConfigError).issues;
      }
      return [];
    })();
    expect(issues).toEqual([
      "WEBHOOK_JOBS: seed-ranges: https://other.example/x is not in WEBHOOK_ALLOWED_URLS",
      expect.stringMatching(/^WEBHOOK_JOBS: unknown job "nope"/),
      'WEBHOOK_JOBS: "bad" is not name=url',
      expect.stringMatching(/^WEBHOOK_SECRET: required/),
    ]);
    const ok = toWebhookSettings({ WEBHOOK_ALLOWED_URLS: ["https://h.example/hooks"], WEBHOOK_SECRET: "s".repeat(32), WEBHOOK_JOBS: "seed-ranges=https://h.example/hooks/a,seed-ranges=https://h.example/hooks/b" }, JOB_NAMES);
    expect([...ok.jobUrls]).toEqual([["seed-ranges", ["https://h.example/hooks/a", "https://h.example/hooks/b"]]]);
  });

  it("signs over timestamp and body; a changed body, an old timestamp or another secret do not verify", () => {
    const now = 1_800_000_000_000;
    const ts = now / 1000;
    const sig = signWebhook("k".repeat(20), ts, '{"a":1}');
    expect(verifyWebhook("k".repeat(20), { timestamp: String(ts), signature: sig }, '{"a":1}', now)).toBe(true);
    expect(verifyWebhook("k".repeat(20), { timestamp: String(ts), signature: sig }, '{"a":2}', now)).toBe(false);
    expect(verifyWebhook("k".repeat(20), { timestamp: String(ts), signature: sig }, '{"a":1}', now + 301_000)).toBe(false);
    expect(verifyWebhook("x".repeat(20), { timestamp: String(ts), signature: sig }, '{"a":1}', now)).toBe(false);
  });
});
