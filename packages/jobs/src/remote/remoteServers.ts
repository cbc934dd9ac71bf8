import { PermanentError } from "@fleet/core/errors";
import { runRemoteCommand } from "@fleet/remote/remoteCommand";
import type { RemoteCommandResult } from "@fleet/remote/remoteCommand";
import { remoteCommandExists, remoteFolderSize, remoteMkdirP } from "@fleet/remote/remoteOperations";
import { targetLabel } from "@fleet/remote/sshTarget";
import type { RegisteredServer } from "./serversFile";

/**
 * Helpers a registered server has besides its own commands (the old systems'). The two that
 * name a path only work at or under the server's `builtinPaths` (none by default): a job may
 * not name any path it likes (found by review: any remote-command submitter could run
 * `mkdir -p` and `du -sb` anywhere as the SSH user).
 */
export const BUILTIN_COMMANDS = {
  "folder-size": "bytes under {path} (du -sb)",
  "mkdir-p": "creates {path} and its parents",
  "command-exists": "whether {name} is a command the login shell can run",
} as const;

export type BuiltinCommand = keyof typeof BUILTIN_COMMANDS;

export interface RemoteRunOptions {
  signal?: AbortSignal;
  /** Overrides the server's timeout for this run. */
  timeoutMs?: number;
}

/** What a remote command left: its exit and output (bounded), or a builtin's value. */
export interface RemoteRunResult {
  server: string;
  command: string;
  exitCode: number | null;
  /** e.g. "SIGTERM", when the command was killed by a signal (exitCode null). */
  signal?: string;
  stdout: string;
  stderr: string;
  truncated: boolean;
  durationMs: number;
  /** folder-size: bytes; command-exists: true/false; mkdir-p: true. */
  value?: number | boolean;
}

/** Bytes of each output stream kept in results (job return values stay small in Redis). */
const RESULT_OUTPUT_BYTES = 16 * 1024;

/**
 * The registered SSH servers (SSH_SERVERS_FILE) and the one way to run something on them:
 * by server name and command name, with values for the command's `{placeholders}`. A name
 * that is not registered is a permanent `invalid-payload`: retrying cannot make it exist.
 */
export class RemoteServers {
  private readonly current: () => ReadonlyMap<string, RegisteredServer>;

  /**
   * `servers` is a map, or a function returning the current one: a running worker then follows
   * SSH_SERVERS_FILE and the known_hosts/key files it names as they change (configFiles.ts).
   */
  constructor(servers: ReadonlyMap<string, RegisteredServer> | (() => ReadonlyMap<string, RegisteredServer>) = new Map(), private readonly source = "SSH_SERVERS_FILE") {
    this.current = typeof servers === "function" ? servers : () => servers;
  }

  private get servers(): ReadonlyMap<string, RegisteredServer> {
    return this.current();
  }

  /** Server names with their label and commands (no secrets), for listings. */
  list(): Array<{ name: string; target: string; commands: string[] }> {
    return [...this.servers.values()].map((s) => ({
      name: s.name,
      target: targetLabel(s.target),
      commands: [...Object.keys(s.commands), ...builtinsOf(s)],
    }));
  }

  server(name: string): RegisteredServer {
    const server = this.servers.get(name);
    if (!server) {
      const known = [...this.servers.keys()];
      throw new PermanentError(
        "invalid-payload",
        known.length === 0
          ? `no SSH server "${name}": none is registered (set ${this.source})`
          : `no SSH server "${name}" in ${this.source} (registered: ${known.join(", ")})`,
      );
    }
    return server;
  }

  async run(serverName: string, command: string, values: Record<string, string> = {}, options: RemoteRunOptions = {}): Promise<RemoteRunResult> {
    const server = this.server(serverName);
    const timeoutMs = options.timeoutMs ?? server.timeoutMs;
    const started = Date.now();
    const builtin = async (value: number | boolean): Promise<RemoteRunResult> => ({
      server: server.name,
      command,
      exitCode: 0,
      stdout: "",
      stderr: "",
      truncated: false,
      durationMs: Date.now() - started,
      value,
    });
    // Own properties only: `constructor` or `__proto__` must not find Object's members.
    const template = Object.hasOwn(server.commands, command) ? server.commands[command] : undefined;
    if (template === undefined) {
      const op = { timeoutMs, signal: options.signal };
      switch (builtinsOf(server).includes(command) ? (command as BuiltinCommand) : undefined) {
        case "folder-size":
          return builtin(await remoteFolderSize(server.target, allowedPath(server, values, command), op));
        case "mkdir-p":
          await remoteMkdirP(server.target, allowedPath(server, values, command), op);
          return builtin(true);
        case "command-exists":
          return builtin(await remoteCommandExists(server.target, required(values, "name", command), op));
        default:
          throw new PermanentError(
            "invalid-payload",
            `server "${server.name}" has no command "${command}" (its commands: ${[...Object.keys(server.commands), ...builtinsOf(server)].join(", ")}${server.builtinPaths.length === 0 && (command === "folder-size" || command === "mkdir-p") ? `; ${command} works only under the server's builtinPaths in ${this.source}, and it lists none` : ""})`,
          );
      }
    }
    const result: RemoteCommandResult = await runRemoteCommand(server.target, { template, values }, {
      timeoutMs,
      env: { ...server.env },
      errorPatterns: server.errorPatterns,
      maxOutputBytes: RESULT_OUTPUT_BYTES,
      label: command,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return {
      server: server.name,
      command,
      exitCode: result.exitCode,
      ...(result.signal ? { signal: result.signal } : {}),
      stdout: result.stdout,
      stderr: result.stderr,
      truncated: result.truncated,
      durationMs: result.durationMs,
    };
  }
}

/** The builtins a server offers: command-exists always, the path ones when it has builtinPaths. */
function builtinsOf(server: RegisteredServer): string[] {
  return server.builtinPaths.length > 0 ? Object.keys(BUILTIN_COMMANDS) : ["command-exists"];
}

/** The `path` value, absolute, without `..`, at or under one of the server's builtinPaths; invalid-payload otherwise. */
function allowedPath(server: RegisteredServer, values: Record<string, string>, command: string): string {
  const path = required(values, "path", command);
  const inside = path.startsWith("/") && !path.split("/").includes("..") && server.builtinPaths.some((root) => path === root || path.startsWith(root === "/" ? "/" : `${root}/`));
  if (!inside) {
    throw new PermanentError("invalid-payload", `${command}: ${JSON.stringify(path)} is not at or under the server's builtinPaths (${server.builtinPaths.join(", ")})`);
  }
  return path;
}

function required(values: Record<string, string>, name: string, command: string): string {
  const value = values[name];
  if (typeof value !== "string" || value === "") throw new PermanentError("invalid-payload", `${command} needs a value for {${name}}`);
  return value;
}
