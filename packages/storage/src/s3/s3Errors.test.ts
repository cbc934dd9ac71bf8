import { AccessDenied, NoSuchBucket, NoSuchKey, NotFound, S3ServiceException } from "@aws-sdk/client-s3";
import { FleetError, PermanentError } from "@fleet/core/errors";
import { checkFailure, describeS3, isS3NotFound, s3Failure } from "./s3Errors";

// Errors as the AWS SDK v3 builds them from a server's answer.
const $metadata = (httpStatusCode: number) => ({ httpStatusCode, requestId: "req-1", attempts: 1, totalRetryDelay: 0 });
const service = (name: string, httpStatusCode: number, $fault: "client" | "server" = httpStatusCode >= 500 ? "server" : "client") =>
  new S3ServiceException({ name, $fault, $metadata: $metadata(httpStatusCode), message: `${name} from the server` });

describe("S3 error mapping", () => {
  it.each([
    ["SlowDown", service("SlowDown", 503), "throttled", true],
    ["ThrottlingException", service("ThrottlingException", 400), "throttled", true],
    ["RequestLimitExceeded", service("RequestLimitExceeded", 400), "throttled", true],
    ["a bare 503", service("Unknown", 503), "throttled", true],
    ["InternalError", service("InternalError", 500), "unavailable", true],
    ["ServiceUnavailable", service("ServiceUnavailable", 503), "unavailable", true],
    ["a bare 502", service("Unknown", 502), "unavailable", true],
    ["RequestTimeout", service("RequestTimeout", 400), "timeout", true],
    ["BadDigest", service("BadDigest", 400), "network", true],
    ["AccessDenied", new AccessDenied({ message: "Access Denied", $metadata: $metadata(403) }), "permission-denied", false],
    ["a bare 403 (HEAD)", service("Forbidden", 403), "permission-denied", false],
    ["InvalidAccessKeyId", service("InvalidAccessKeyId", 403), "auth-failed", false],
    ["SignatureDoesNotMatch", service("SignatureDoesNotMatch", 403), "auth-failed", false],
    ["NoSuchBucket", new NoSuchBucket({ message: "The specified bucket does not exist", $metadata: $metadata(404) }), "bad-config", false],
    ["NoSuchKey", new NoSuchKey({ message: "The specified key does not exist.", $metadata: $metadata(404) }), "not-found", false],
    ["NotFound (HEAD)", new NotFound({ message: "NotFound", $metadata: $metadata(404) }), "not-found", false],
    ["EntityTooLarge", service("EntityTooLarge", 400), "unsupported", false],
  ])("maps %s to %s", (_label, err, category, retryable) => {
    const failure = s3Failure("write", "a/b.txt", err);
    expect(failure).toBeInstanceOf(FleetError);
    expect([failure.category, failure.retryable]).toEqual([category, retryable]);
    expect(failure.message).toContain('write "a/b.txt"');
    expect(failure.cause).toBe(err);
  });

  it("keeps the server's error code and HTTP status in the message", () => {
    expect(describeS3(service("SlowDown", 503))).toBe("SlowDown (HTTP 503): SlowDown from the server");
    expect(describeS3(new NotFound({ message: "NotFound", $metadata: $metadata(404) }))).toBe("NotFound (HTTP 404)");
  });

  it("maps the SDK's timeouts and Node's socket errors", () => {
    const timeout = Object.assign(new Error("@smithy/node-http-handler - the request socket timed out after 60000 ms of inactivity"), { name: "TimeoutError" });
    expect(s3Failure("read", "k", timeout)).toMatchObject({ category: "timeout", retryable: true });
    const requestTimeout = Object.assign(new Error("a request has exceeded the configured 1000 ms requestTimeout"), { name: "TimeoutError", code: "ETIMEDOUT" });
    expect(s3Failure("read", "k", requestTimeout)).toMatchObject({ category: "timeout" });
    for (const code of ["ECONNRESET", "ECONNREFUSED", "EPIPE"]) {
      const socket = Object.assign(new Error(`socket: ${code}`), { code, $metadata: { attempts: 2, totalRetryDelay: 40 } });
      expect(s3Failure("write", "k", socket)).toMatchObject({ category: "network", retryable: true });
    }
  });

  it("reports an aborted operation as interrupted, whatever the SDK made of it", () => {
    const controller = new AbortController();
    controller.abort();
    const failure = s3Failure("write", "k", service("InternalError", 500), controller.signal);
    expect(failure).toMatchObject({ category: "interrupted", retryable: true });
    const own = new PermanentError("checksum-mismatch", "differs");
    expect(s3Failure("write", "k", own)).toBe(own);
  });

  it("tells a missing object from a missing bucket", () => {
    expect(isS3NotFound(new NoSuchKey({ message: "x", $metadata: $metadata(404) }))).toBe(true);
    expect(isS3NotFound(new NotFound({ message: "x", $metadata: $metadata(404) }))).toBe(true);
    expect(isS3NotFound(new NoSuchBucket({ message: "x", $metadata: $metadata(404) }))).toBe(false);
    expect(isS3NotFound(service("AccessDenied", 403))).toBe(false);
  });

  it("check(): says what to fix, and keeps an unreachable endpoint retryable", () => {
    const where = "destination s3://b/ (endpoint http://127.0.0.1:9)";
    expect(checkFailure(where, "destination", new NotFound({ message: "NotFound", $metadata: $metadata(404) }))).toMatchObject({
      category: "bad-config",
      message: expect.stringContaining("the bucket does not exist: create it, or fix DESTINATION_URL"),
    });
    expect(checkFailure(where, "source", service("InvalidAccessKeyId", 403))).toMatchObject({ category: "bad-config", message: expect.stringContaining("credentials were refused") });
    expect(checkFailure(where, "source", service("Forbidden", 403))).toMatchObject({ category: "bad-config", message: expect.stringContaining("s3:ListBucket") });
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:9"), { code: "ECONNREFUSED" });
    expect(checkFailure(where, "destination", refused)).toMatchObject({ category: "network", retryable: true, message: expect.stringContaining("is not reachable") });
  });
});
