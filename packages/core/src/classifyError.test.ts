import { classifyError, classifyTransferError } from "./classifyError";
import { LINK_FAULT_CATEGORIES, PermanentError, RetryableError, isLinkFaultCategory, isRetryableCategory } from "./errors";

const errno = (code: string, message = code) => Object.assign(new Error(message), { code });

describe("classifyError", () => {
  it.each([
    ["ENOENT", "not-found", false],
    ["EACCES", "permission-denied", false],
    ["EPERM", "permission-denied", false],
    ["ENOSPC", "no-space", true],
    ["EDQUOT", "no-space", true],
    ["EROFS", "storage-unavailable", true],
    ["EFBIG", "unsupported", false],
    ["EISDIR", "not-a-file", false],
    ["ENXIO", "not-a-file", false],
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

  // Shaped like AWS SDK v3 service errors (name = the server's error code); the SDK's own
  // classes are exercised in @fleet/storage's s3Errors.test.ts.
  const aws = (name: string, httpStatusCode: number) => Object.assign(new Error(`${name} says no`), { name, $metadata: { httpStatusCode } });
  it.each([
    ["SlowDown", 503, "throttled", true],
    ["ThrottlingException", 400, "throttled", true],
    ["RequestLimitExceeded", 400, "throttled", true],
    ["Unknown", 503, "throttled", true],
    ["InternalError", 500, "unavailable", true],
    ["ServiceUnavailable", 503, "unavailable", true],
    ["Unknown", 502, "unavailable", true],
    ["RequestTimeout", 400, "timeout", true],
    ["AccessDenied", 403, "permission-denied", false],
    ["Forbidden", 403, "permission-denied", false],
    ["InvalidAccessKeyId", 403, "auth-failed", false],
    ["SignatureDoesNotMatch", 403, "auth-failed", false],
    ["NoSuchBucket", 404, "bad-config", false],
    ["NoSuchKey", 404, "not-found", false],
    ["NotFound", 404, "not-found", false],
    ["EntityTooLarge", 400, "unsupported", false],
    ["ConditionalRequestConflict", 409, "lock-contention", true],
  ])("maps AWS SDK error %s (HTTP %d) to %s", (name, status, category, retryable) => {
    const e = classifyError(aws(name, status));
    expect([e.category, e.retryable]).toEqual([category, retryable]);
  });

  it("maps the AWS SDK's timeouts to retryable timeout, and its socket errors by their code", () => {
    const timeout = Object.assign(new Error("the request socket timed out after 100 ms of inactivity"), { name: "TimeoutError" });
    expect(classifyError(timeout).category).toBe("timeout");
    const reset = Object.assign(errno("ECONNRESET", "socket hang up"), { $metadata: { attempts: 2 } });
    expect(classifyError(reset).category).toBe("network");
    const wrapped = Object.assign(new Error("AWS SDK error wrapper for Error: connect ECONNREFUSED 127.0.0.1:9000"), { $metadata: { attempts: 2 } });
    expect(classifyError(wrapped).category).toBe("network");
  });

  // Shaped like ssh2's errors: SFTP status replies carry a numeric `code`, connection
  // failures a `level`; @fleet/storage's sftp*/remote* tests produce the real ones.
  const sftpStatus = (code: number, message: string) => Object.assign(new Error(message), { code });
  const sshLevel = (level: string, message: string) => Object.assign(new Error(message), { level });
  it.each([
    [sftpStatus(2, "No such file"), "not-found", false],
    [sftpStatus(3, "Permission denied"), "permission-denied", false],
    [sftpStatus(4, "Failure"), "io", true],
    [sftpStatus(8, "Operation unsupported"), "unsupported", false],
    [sftpStatus(7, "Connection lost"), "network", true],
    [sshLevel("client-authentication", "All configured authentication methods failed"), "auth-failed", false],
    [sshLevel("handshake", "Host denied (verification failed)"), "auth-failed", false],
    [sshLevel("handshake", "Handshake failed: no matching host key format"), "unsupported", false],
    [sshLevel("client-timeout", "Timed out while waiting for handshake"), "timeout", true],
    [sshLevel("client-timeout", "Keepalive timeout"), "timeout", true],
    [sshLevel("protocol", "Connection lost before handshake"), "network", true],
    [Object.assign(errno("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:22"), { level: "client-socket" }), "network", true],
    [new Error("No response from server"), "network", true],
    [new Error("Not connected"), "network", true],
    [Object.assign(new Error("Received exit code 1 while establishing SFTP session"), { code: 1 }), "unavailable", true],
  ])("maps ssh2 error %p to %s", (err, category, retryable) => {
    const e = classifyError(err);
    expect([e.category, e.retryable]).toEqual([category, retryable]);
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

  it("calls a link fault only what points at the link or a whole storage, and every link fault is retryable", () => {
    for (const category of LINK_FAULT_CATEGORIES) expect(isRetryableCategory(category)).toBe(true);
    expect(isLinkFaultCategory("no-space")).toBe(true);
    expect(isLinkFaultCategory("storage-unavailable")).toBe(true);
    expect(isLinkFaultCategory("io")).toBe(false);
    expect(isLinkFaultCategory("source-changed")).toBe(false);
    expect(isLinkFaultCategory("not-found")).toBe(false);
  });
});

describe("classifyTransferError: a file's fault or its link's", () => {
  const where = (err: unknown, side: "source" | "destination") => {
    const e = classifyTransferError(err, side);
    return [e.category, e.retryable, isLinkFaultCategory(e.category)];
  };

  it("never makes a file permanent for what refuses the destination as a whole", () => {
    // The issue's case: the destination folder vanished under a stale folder cache.
    const mkdir = new PermanentError("not-found", 'create folder of "user01/2015/a.pdf": ENOENT: no such file or directory, mkdir', { cause: errno("ENOENT") });
    expect(where(mkdir, "destination")).toEqual(["storage-unavailable", true, true]);
    expect(where(errno("EACCES"), "destination")).toEqual(["storage-unavailable", true, true]);
    expect(where(errno("EPERM"), "destination")).toEqual(["storage-unavailable", true, true]);
    expect(where(errno("EROFS"), "destination")).toEqual(["storage-unavailable", true, true]);
    expect(where(errno("ENOSPC"), "destination")).toEqual(["no-space", true, true]);
    expect(where(aws("AccessDenied", 403), "destination")).toEqual(["storage-unavailable", true, true]);
    expect(where(aws("NoSuchBucket", 404), "destination")).toEqual(["storage-unavailable", true, true]);
    expect(where(sshLevelError("client-authentication"), "destination")).toEqual(["storage-unavailable", true, true]);
  });

  it("keeps connection trouble a link fault on either side", () => {
    for (const side of ["source", "destination"] as const) {
      expect(where(errno("ECONNREFUSED"), side)).toEqual(["network", true, true]);
      expect(where(errno("ECONNRESET"), side)).toEqual(["network", true, true]);
      expect(where(aws("SlowDown", 503), side)).toEqual(["throttled", true, true]);
      expect(where(aws("InternalError", 500), side)).toEqual(["unavailable", true, true]);
      expect(where(Object.assign(new Error("timed out"), { name: "TimeoutError" }), side)).toEqual(["timeout", true, true]);
    }
  });

  it("leaves a missing or unreadable source file that file's own fault", () => {
    expect(where(errno("ENOENT"), "source")).toEqual(["not-found", false, false]);
    expect(where(errno("EACCES"), "source")).toEqual(["permission-denied", false, false]);
    expect(where(aws("NoSuchKey", 404), "source")).toEqual(["not-found", false, false]);
    // …but a bucket or credentials gone are the link's.
    expect(where(aws("NoSuchBucket", 404), "source")).toEqual(["storage-unavailable", true, true]);
  });

  it("leaves the file's own faults alone on either side", () => {
    for (const side of ["source", "destination"] as const) {
      expect(where(new PermanentError("checksum-mismatch", "x"), side)).toEqual(["checksum-mismatch", false, false]);
      expect(where(new PermanentError("destination-exists", "x"), side)).toEqual(["destination-exists", false, false]);
      expect(where(new PermanentError("invalid-key", "x"), side)).toEqual(["invalid-key", false, false]);
      expect(where(new RetryableError("source-changed", "x"), side)).toEqual(["source-changed", true, false]);
      expect(where(errno("EIO"), side)).toEqual(["io", true, false]);
    }
    expect(where(errno("EISDIR"), "source")).toEqual(["not-a-file", false, false]);
  });
});

function sshLevelError(level: string): Error {
  return Object.assign(new Error("All configured authentication methods failed"), { level });
}

function aws(name: string, httpStatusCode: number): Error {
  return Object.assign(new Error(`${name} says no`), { name, $metadata: { httpStatusCode } });
}
