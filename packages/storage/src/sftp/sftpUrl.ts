import { PermanentError } from "@fleet/core/errors";
import { DEFAULT_SSH_PORT } from "@fleet/remote/sshTarget";

/** What an `sftp://` storage URL says: where, as whom, and under which folder. No secrets. */
export interface SftpUrlParts {
  host: string;
  port: number;
  username: string;
  /** Absolute folder on the server (percent-decoded), "/" when the URL has no path. */
  root: string;
}

/**
 * Parses `sftp://user@host[:port][/absolute/path]` (IPv6 as `[::1]`). The URL carries no
 * credentials and no host key: a password in it is refused (URLs end up in logs, process
 * lists and the database); keys, passwords and the host key come from their own settings.
 * Errors never repeat the URL, in case it held a password anyway.
 */
export function parseSftpUrl(url: string): SftpUrlParts {
  let parsed: URL;
  try {
    parsed = new URL(url.trim());
  } catch (err) {
    throw new PermanentError("bad-config", "storage URL is not a valid sftp://user@host:port/path URL", { cause: err });
  }
  if (parsed.protocol !== "sftp:") {
    throw new PermanentError("bad-config", `storage URL scheme ${parsed.protocol.replace(/:$/, "")} is not sftp`);
  }
  if (parsed.password !== "") {
    throw new PermanentError(
      "bad-config",
      "an sftp:// URL must not contain a password (it would end up in logs and the database): configure the password or private key separately",
    );
  }
  if (parsed.username === "") throw new PermanentError("bad-config", "an sftp:// URL needs a user name: sftp://user@host:port/path");
  if (parsed.hostname === "") throw new PermanentError("bad-config", "an sftp:// URL needs a host: sftp://user@host:port/path");
  if (parsed.search !== "" || parsed.hash !== "") {
    throw new PermanentError("bad-config", "an sftp:// URL takes no ?query or #fragment: configure options separately");
  }
  let root: string;
  let username: string;
  try {
    root = decodeURIComponent(parsed.pathname || "/") || "/";
    username = decodeURIComponent(parsed.username);
  } catch (err) {
    throw new PermanentError("bad-config", "the sftp:// URL has an invalid %-escape", { cause: err });
  }
  if (root === "/~" || root.startsWith("/~/")) {
    throw new PermanentError("bad-config", "an sftp:// URL path is absolute on the server; home-relative paths (/~/…) are not supported");
  }
  return {
    host: parsed.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: parsed.port === "" ? DEFAULT_SSH_PORT : Number(parsed.port),
    username,
    root,
  };
}
