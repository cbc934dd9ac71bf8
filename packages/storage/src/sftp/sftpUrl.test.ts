import { parseSftpUrl } from "./sftpUrl";

describe("parseSftpUrl", () => {
  it("reads user, host, port and an absolute root", () => {
    expect(parseSftpUrl("sftp://migrate@files.example.com:2222/srv/data")).toEqual({
      host: "files.example.com",
      port: 2222,
      username: "migrate",
      root: "/srv/data",
    });
    expect(parseSftpUrl("sftp://u@h")).toEqual({ host: "h", port: 22, username: "u", root: "/" });
    expect(parseSftpUrl("sftp://u@h/")).toMatchObject({ root: "/" });
  });

  it("decodes percent-escapes in the user and the path; takes IPv6 in brackets", () => {
    expect(parseSftpUrl("sftp://first.last%40corp@[::1]:22/data/with%20space/%C3%BC")).toEqual({
      host: "::1",
      port: 22,
      username: "first.last@corp",
      root: "/data/with space/ü",
    });
  });

  it("refuses passwords, missing parts and options without repeating the URL", () => {
    const cases: Array<[string, RegExp]> = [
      ["sftp://u:hunter2@h/x", /must not contain a password/],
      ["sftp://h/x", /needs a user name/],
      ["sftp://u@h/x?pool=3", /no \?query/],
      ["sftp://u@h/~/x", /home-relative/],
      ["s3://bucket/x", /is not sftp/],
      ["sftp://u@h:99999/x", /not a valid/],
    ];
    for (const [url, message] of cases) {
      let error: { category?: string; message: string } | undefined;
      try {
        parseSftpUrl(url);
      } catch (err) {
        error = err as { category?: string; message: string };
      }
      expect(error?.category).toBe("bad-config");
      expect(error?.message).toMatch(message);
      expect(error?.message).not.toContain("hunter2");
    }
  });
});
