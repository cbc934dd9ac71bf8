import { classifyError } from "./classifyError";
import { PermanentError, RetryableError, isRetryableCategory } from "./errors";

const errno = (code: string, message = code) => Object.assign(new Error(message), { code });

describe("classifyError", () => {
  it.each([
    ["ENOENT", "not-found", false],
    ["EACCES", "permission-denied", false],
    ["EPERM", "permission-denied", false],
    ["ENOSPC", "no-space", false],
    ["ECONNRESET", "network", true],
    ["ECONNREFUSED", "network", true],
    ["ETIMEDOUT", "timeout", true],
    ["EMFILE", "io", true],
    ["EAI_AGAIN", "network", true],
  ])("maps fs/net %s to %s", (code, category, retryable) => {
    const e = classifyError(errno(code));
    expect(e.category).toBe(category);
    expect(e.retryable).toBe(retryable);
    expect(e.cause).toBeInstanceOf(Error);
  });

  it.each([
    ["40001", "lock-contention", true],
    ["40P01", "lock-contention", true],
    ["55P03", "lock-contention", true],
    ["57P01", "unavailable", true],
    ["08006", "database", true],
    ["53300", "unavailable", true],
    ["57014", "timeout", true],
    ["28P01", "auth-failed", false],
    ["23505", "invalid-payload", false],
    ["42P01", "bad-config", false],
  ])("maps SQLSTATE %s to %s", (code, category, retryable) => {
    const e = classifyError(errno(code, "pg says no"));
    expect([e.category, e.retryable]).toEqual([category, retryable]);
  });

  it("maps Redis connection trouble to retryable unavailable", () => {
    expect(classifyError(new Error("Connection is closed.")).category).toBe("unavailable");
    expect(classifyError(new Error("Reached the max retries per request limit (which is 1).")).category).toBe("unavailable");
    expect(classifyError(new Error("LOADING Redis is loading the dataset in memory")).retryable).toBe(true);
  });

  it("maps aborts to retryable interrupted and zod errors to permanent invalid-payload", () => {
    const abort = new Error("aborted");
    abort.name = "AbortError";
    expect(classifyError(abort).category).toBe("interrupted");
    const zodLike = Object.assign(new Error("bad"), { name: "ZodError", issues: [] });
    expect(classifyError(zodLike)).toBeInstanceOf(PermanentError);
  });

  it("looks through causes and passes Fleet errors unchanged", () => {
    const wrapped = new Error("copy failed", { cause: errno("ENOENT") });
    expect(classifyError(wrapped).category).toBe("not-found");
    const own = new RetryableError("throttled", "slow down");
    expect(classifyError(own)).toBe(own);
  });

  it("treats unmapped errors as retryable unknown, keeping the message", () => {
    const e = classifyError(new Error("something odd"));
    expect(e).toBeInstanceOf(RetryableError);
    expect(e.category).toBe("unknown");
    expect(e.message).toBe("something odd");
    expect(classifyError("a thrown string").message).toBe("a thrown string");
  });

  it("knows which categories retry-failed may retry", () => {
    expect(isRetryableCategory("network")).toBe(true);
    expect(isRetryableCategory("not-found")).toBe(false);
    expect(isRetryableCategory("checksum-mismatch")).toBe(false);
  });
});
