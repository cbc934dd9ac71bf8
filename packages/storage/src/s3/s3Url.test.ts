import { parseS3Url } from "./s3Storage";

describe("parseS3Url", () => {
  it("reads the bucket and the folder", () => {
    expect(parseS3Url("s3://my-bucket")).toEqual({ bucket: "my-bucket", prefix: "" });
    expect(parseS3Url("s3://my-bucket/")).toEqual({ bucket: "my-bucket", prefix: "" });
    expect(parseS3Url("s3://my.bucket/archive/2024")).toEqual({ bucket: "my.bucket", prefix: "archive/2024/" });
    expect(parseS3Url("s3://b-1/with%20space/%C3%BC/")).toEqual({ bucket: "b-1", prefix: "with space/ü/" });
  });

  it("reads per-URL connection settings from the query", () => {
    expect(parseS3Url("s3://bkt/p?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1&pathStyle=true")).toEqual({
      bucket: "bkt",
      prefix: "p/",
      endpoint: "http://127.0.0.1:9000",
      region: "eu-west-1",
      forcePathStyle: true,
    });
    expect(parseS3Url("s3://bkt?endpoint=https://minio.example.com/&pathStyle=false")).toMatchObject({ endpoint: "https://minio.example.com", forcePathStyle: false });
    expect(parseS3Url("s3://bkt?conditionalWrites=false").conditionalWrites).toBe(false);
    expect(parseS3Url("s3://bkt?conditionalWrites=true").conditionalWrites).toBe(true);
    expect(parseS3Url("s3://bkt?conditionalWrites=auto").conditionalWrites).toBe("auto");
  });

  it.each([
    ["not a URL", "bucket/path", "is not a URL"],
    ["another scheme", "file:///data", "is not an s3:// URL"],
    ["credentials", "s3://KEY:SECRET@bkt/p", "carries credentials"],
    ["a port", "s3://bkt:9000/p", "has a port"],
    ["a bad bucket name", "s3://-bkt/p", "not a valid bucket name"],
    ["a '..' folder", "s3://bkt/a/../b", "has a '..'"],
    ["an encoded '..' folder", "s3://bkt/a/%2E%2e/b", "has a '..'"],
    ["a control character in the folder", "s3://bkt/a%09b", "unusable folder"],
    ["an unknown setting", "s3://bkt?acl=private", 'unknown setting "acl"'],
    ["a bad endpoint", "s3://bkt?endpoint=ftp://x", "not http:// or https://"],
    ["a bad pathStyle", "s3://bkt?pathStyle=yes", "true or false"],
    ["a bad conditionalWrites", "s3://bkt?conditionalWrites=yes", "auto, true or false"],
  ])("refuses %s as bad-config", (_label, url, message) => {
    expect(() => parseS3Url(url)).toThrow(expect.objectContaining({ category: "bad-config", message: expect.stringContaining(message) }));
  });

  it("never echoes the URL (it may hold secrets) in its errors", () => {
    expect(() => parseS3Url("s3://KEY:SECRET@bkt/p")).toThrow(expect.not.objectContaining({ message: expect.stringContaining("SECRET") }));
  });
});
