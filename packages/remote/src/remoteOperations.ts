import { PermanentError } from "@fleet/core/errors";
import { runRemoteCommand } from "./remoteCommand";
import type { SshTarget } from "./sshTarget";

/**
 * The small remote checks the old migration scripts ran over SSH, as typed functions. They
 * assume a GNU/Linux server (GNU du for -b) with a POSIX login shell. Paths are passed as
 * single quoted arguments, never interpolated.
 */

export interface RemoteOperationOptions {
  /** Default 60 s (du over a large tree can take a while). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

const DEFAULT_TIMEOUT_MS = 60_000;

/** Apparent size in bytes of everything under `path` (`du -sb`). */
export async function remoteFolderSize(target: SshTarget, path: string, options: RemoteOperationOptions = {}): Promise<number> {
  const result = await runRemoteCommand(target, ["du", "-sb", "--", checkedPath(path)], commandOptions(options, "du"));
  const match = /^(\d+)\s/.exec(result.stdout);
  if (!match) {
    throw new PermanentError("unsupported", `du on the server printed ${JSON.stringify(result.stdout.slice(0, 100))}, not "<bytes>\\t<path>" (GNU du needed)`);
  }
  return Number(match[1]);
}

/** Creates `path` and its parents; fine if it exists already as a directory. */
export async function remoteMkdirP(target: SshTarget, path: string, options: RemoteOperationOptions = {}): Promise<void> {
  await runRemoteCommand(target, ["mkdir", "-p", "--", checkedPath(path)], commandOptions(options, "mkdir"));
}

/** Whether `name` is a command the login shell can run (`command -v`: builtin, function or on PATH). */
export async function remoteCommandExists(target: SshTarget, name: string, options: RemoteOperationOptions = {}): Promise<boolean> {
  if (!/^[A-Za-z0-9._+][A-Za-z0-9._+-]*$/.test(name) && !/^\/[^\0]*$/.test(name)) {
    throw new PermanentError("invalid-payload", `${JSON.stringify(name)} is not a command name or absolute path`);
  }
  const result = await runRemoteCommand(
    target,
    { template: "command -v {name} >/dev/null 2>&1", values: { name } },
    { ...commandOptions(options, "command -v"), okExitCodes: [0, 1, 127] },
  );
  return result.exitCode === 0;
}

function checkedPath(path: string): string {
  if (typeof path !== "string" || path === "") throw new PermanentError("invalid-payload", "remote path is empty");
  return path;
}

function commandOptions(options: RemoteOperationOptions, label: string) {
  return { timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS, signal: options.signal, maxOutputBytes: 64 * 1024, label };
}
