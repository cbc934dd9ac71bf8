import { randomBytes } from "node:crypto";
import { constants } from "node:os";
import type { Client, ClientChannel } from "ssh2";
import { PermanentError, RetryableError } from "@fleet/core/errors";
import type { FleetError } from "@fleet/core/errors";
import { DEFAULT_REMOTE_ERROR_PATTERNS, classifyRemoteExit } from "./remoteErrors";
import type { RemoteErrorPatterns } from "./remoteErrors";
import { BoundedOutput } from "./remoteOutput";
import { commandLineOf, commandNameOf, execLineOf, shellQuote } from "./remoteShell";
import type { RemoteCommandSpec } from "./remoteShell";
import { connectSsh } from "./sshConnect";
import { targetLabel } from "./sshTarget";
import type { SshTarget } from "./sshTarget";

/**
 * Runs one command on a registered server over SSH (exec channel, no pty) and reports how it
 * ended. One connection per call: these are occasional administrative commands (start an
 * export, check free space), not a hot path.
 *
 * Killing on timeout or abort: sshd starts each command as a session leader (setsid), and
 * the 'signal' channel request reaches only that process, not what it started. So the
 * command line first reports its PID on stderr (a marker line, removed from the captured
 * output); to stop it we send SIGKILL through the channel and also run
 * `kill -s KILL -- -PID` on the same connection, which kills its whole process group.
 *
 * A connection that drops (the worker SIGKILLed, its host gone) stops no one: without a pty
 * sshd signals nothing, so the command ran on to its end while the job, redelivered, ran it a
 * second time beside it (found by the fault probe: SIGKILL mid-command, 11 s of two runs at
 * once, the first one recorded nowhere). So the command runs in the background of a shell
 * whose watchdog reads the channel's stdin, which we never write to nor close: sshd closes it
 * only when the connection is gone, and the watchdog then kills the whole process group.
 */

export interface RemoteCommandOptions {
  /** The command is killed after this long (connecting is bounded by target.readyTimeoutMs). */
  timeoutMs: number;
  /**
   * Variables for the command. Sent as `export NAME='value';` before it, because sshd drops
   * SSH environment requests that its AcceptEnv does not list (by default all but LANG/LC_*).
   */
  env?: Record<string, string>;
  /** Bytes kept per stream (stdout and stderr each): the first and last halves. Default 1 MiB. */
  maxOutputBytes?: number;
  signal?: AbortSignal;
  /** Classify a failed exit (default DEFAULT_REMOTE_ERROR_PATTERNS); replaces the defaults. */
  errorPatterns?: RemoteErrorPatterns;
  /** Exit codes that count as success (default [0]). */
  okExitCodes?: readonly number[];
  /** Names the command in errors (default: the program name; arguments are never shown). */
  label?: string;
}

export interface RemoteCommandResult {
  /**
   * null when the command was killed by a signal. One simple command (argv, or a template of
   * plain words) is exec'd and reports its own exit; for any other line a status of 128 + N, N
   * a signal that kills, counts as killed by signal N unless okExitCodes lists it: see
   * signalOfShellStatus().
   */
  exitCode: number | null;
  /** e.g. "SIGKILL", when killed by a signal. */
  signal?: string;
  stdout: string;
  stderr: string;
  /** True when either stream was longer than maxOutputBytes (head and tail kept). */
  truncated: boolean;
  durationMs: number;
}

/** The cause attached to a remote command's FleetError: carries the full result. */
export class RemoteCommandFailure extends Error {
  readonly result: RemoteCommandResult;
  constructor(message: string, result: RemoteCommandResult) {
    super(message);
    this.name = "RemoteCommandFailure";
    this.result = result;
  }
}

const DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024;
// How long a killed command may take to report its end before we stop waiting.
const KILL_GRACE_MS = 3000;
// Login-shell noise tolerated on stderr before the PID marker is given up on.
const MARKER_SEARCH_BYTES = 64 * 1024;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Runs `command` and resolves with its result when the exit code is in okExitCodes.
 * Otherwise rejects with a FleetError (cause: RemoteCommandFailure with the result):
 * a failed exit as classified by errorPatterns; timeout → RetryableError("timeout");
 * abort → RetryableError("interrupted"); connection lost → RetryableError("network");
 * connection refused, auth and host key failures as connectSsh() reports them.
 */
export async function runRemoteCommand(
  target: SshTarget,
  command: RemoteCommandSpec,
  options: RemoteCommandOptions,
): Promise<RemoteCommandResult> {
  if (!(options.timeoutMs > 0)) throw new PermanentError("invalid-payload", "remote command timeoutMs must be positive");
  // One simple command is exec'd (sshd then reports its own exit, or the signal that killed
  // it); any other line is run by the shell, whose status 128 + N may be either.
  const execLine = execLineOf(command);
  const line = execLine ?? commandLineOf(command);
  const token = randomBytes(6).toString("hex");
  const full = guardedCommandLine(token, `${exportsOf(options.env)}${line}`, execLine !== undefined);
  const describe = `remote command ${options.label ?? commandNameOf(command)} on ${targetLabel(target)}`;
  if (options.signal?.aborted) throw new RetryableError("interrupted", `${describe}: aborted before it started`);
  const client = await connectSsh(target, options.signal);
  try {
    return await execute(client, full, token, describe, options, execLine !== undefined);
  } finally {
    client.end();
    setTimeout(() => client.destroy(), 1000).unref();
  }
}

/**
 * The line sshd's shell runs: the PID marker, then a watchdog, detached (a child of a subshell
 * that exits at once, so that the command has no child it did not start), that waits for the
 * channel's stdin to end, which only a lost connection does, and then kills the process group
 * if the shell (or what it exec'd) still runs. Then `line` runs in the shell itself, its stdin
 * /dev/null (Fleet never sends input): a line `exec …` (one simple command, see execLineOf)
 * replaces the shell by the program, so that sshd reports the program's own end — its exit
 * status, or the signal that killed it, which a shell reports as 128 + N, the same as an exit
 * with that status (a command that exits 130 itself read as killed by SIGINT). Any other line
 * ends the shell with its status: it runs in a subshell `( … )` (which execs its last command),
 * `line` ending with a newline of its own before `)` so a trailing comment or here-document in
 * a template stays closed.
 *
 * The shell's stderr is /dev/null from the launch on (`exec 4>&2 2>/dev/null`, on the line
 * that launches, so a template's parse error, reported while that line is read, still reaches
 * the captured stderr), and only the command gets the real one back (`2>&4`, applied in the
 * subshell or by the exec, never to the shell's own stderr): bash reports a command killed by a
 * signal on its own stderr with its command line (`bash: line 3: PID Killed  pg_dump …
 * 'value'`), which put the arguments, and exported variables, into the captured stderr, the
 * error's excerpt (arguments are never shown) and the error patterns' input (found by review).
 */
export function guardedCommandLine(token: string, line: string, execd = false): string {
  return [
    `printf 'fleet-pid-${token} %s\\n' "$$" >&2; exec 3<&0 </dev/null`,
    `( { while read -r fleet_line <&3; do :; done; kill -0 "$$" && kill -s KILL -- "-$$"; } >/dev/null 2>&1 & ); exec 3<&-`,
    // exec'd: the redirections are the exec's own, made permanent as the program replaces the shell.
    ...(execd ? [`exec 4>&2 2>/dev/null; ${line} 2>&4 4>&-`] : [`exec 4>&2 2>/dev/null; ( ${line}`, `) 2>&4 4>&-`]),
  ].join("\n");
}

function exportsOf(env: Record<string, string> | undefined): string {
  const entries = Object.entries(env ?? {});
  if (entries.length === 0) return "";
  for (const [name] of entries) {
    if (!ENV_NAME.test(name)) throw new PermanentError("invalid-payload", `environment variable name ${JSON.stringify(name)} is not valid`);
  }
  return `export ${entries.map(([name, value]) => `${name}=${shellQuote(value)}`).join(" ")}; `;
}

function execute(
  client: Client,
  commandLine: string,
  token: string,
  describe: string,
  options: RemoteCommandOptions,
  /** The program was exec'd: sshd's exit status and signal are its own (see guardedCommandLine). */
  execd: boolean,
): Promise<RemoteCommandResult> {
  const started = Date.now();
  const limit = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
  const stdout = new BoundedOutput(limit);
  const stderr = new BoundedOutput(limit);
  const marker = new PidMarker(`fleet-pid-${token} `);
  let exitCode: number | null | undefined;
  let exitSignal: string | undefined;
  let stopping: "timeout" | "interrupted" | undefined;
  // Whether the kill of the command's process group went out (it needs the PID from the marker).
  let groupKilled = false;

  return new Promise<RemoteCommandResult>((resolve, reject) => {
    let settled = false;
    let channel: ClientChannel | undefined;
    let graceTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => stop("timeout"), options.timeoutMs);
    const onAbort = (): void => stop("interrupted");
    options.signal?.addEventListener("abort", onAbort, { once: true });

    const result = (): RemoteCommandResult => {
      const rest = marker.flush();
      if (rest.length > 0) stderr.push(rest);
      return {
        exitCode: exitCode ?? null,
        ...(exitSignal ? { signal: exitSignal } : {}),
        stdout: stdout.text(),
        stderr: stderr.text(),
        truncated: stdout.truncated || stderr.truncated,
        durationMs: Date.now() - started,
      };
    };

    const settle = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(graceTimer);
      options.signal?.removeEventListener("abort", onAbort);
      client.removeListener("close", onClientClose);
      const outcome = result();
      const failure = (message: string): RemoteCommandFailure => new RemoteCommandFailure(message, outcome);
      let error: FleetError | undefined;
      if (stopping === "timeout") {
        const message = `${describe} timed out after ${options.timeoutMs} ms and was killed`;
        error = new RetryableError("timeout", message, { cause: failure(message) });
      } else if (stopping === "interrupted") {
        const message = `${describe} was aborted and killed`;
        error = new RetryableError("interrupted", message, { cause: failure(message) });
      } else if (exitCode === undefined) {
        const message = `${describe}: the connection was lost before the command finished`;
        error = new RetryableError("network", message, { cause: failure(message) });
      } else if (exitCode === null || !(options.okExitCodes ?? [0]).includes(exitCode)) {
        error = classifyRemoteExit(
          { exitCode, signal: exitSignal, stdout: outcome.stdout, stderr: outcome.stderr },
          options.errorPatterns ?? DEFAULT_REMOTE_ERROR_PATTERNS,
          describe,
          failure(`${describe} failed`),
        );
      }
      if (error) reject(error);
      else resolve(outcome);
    };

    function stop(reason: "timeout" | "interrupted"): void {
      if (settled || stopping) return;
      stopping = reason;
      kill();
      // A server that no longer answers must not keep us waiting for the channel to close.
      graceTimer = setTimeout(settle, KILL_GRACE_MS);
    }

    /**
     * Kills what runs, as far as is known yet: before the marker has told the PID (a stop right
     * after the channel opened) only the session leader can be signalled, and the channel stays
     * open until the PID arrives, then the whole group is killed. Closing it at once left the
     * command's children running (found by CI: an abort 500 ms after the start, on a loaded
     * machine, left `sleep` running).
     */
    function kill(): void {
      if (!channel || groupKilled) return; // not started yet: the exec callback calls again
      if (marker.pid === undefined) {
        signalLeader(channel);
        return;
      }
      groupKilled = true;
      killRemote(client, channel, marker.pid);
    }

    function onClientClose(): void {
      settle();
    }
    client.once("close", onClientClose);

    try {
      client.exec(commandLine, (err, opened) => {
        if (err) {
          settled = true;
          clearTimeout(timer);
          options.signal?.removeEventListener("abort", onAbort);
          client.removeListener("close", onClientClose);
          reject(new RetryableError("unavailable", `${describe}: the server refused to start it: ${err.message}`, { cause: err }));
          return;
        }
        channel = opened;
        if (stopping) kill();
        opened.on("data", (data: Buffer) => stdout.push(data));
        opened.stderr.on("data", (data: Buffer) => {
          const rest = marker.filter(data, MARKER_SEARCH_BYTES);
          if (rest.length > 0) stderr.push(rest);
          if (stopping && marker.pid !== undefined) kill(); // the PID a stop was waiting for
        });
        opened.on("exit", (code: number | null, signalName?: string) => {
          const killedBy = code === null || execd ? undefined : signalOfShellStatus(code, options.okExitCodes ?? [0]);
          exitCode = killedBy ? null : code;
          exitSignal = killedBy ?? signalName;
        });
        opened.on("close", settle);
      });
    } catch (err) {
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      client.removeListener("close", onClientClose);
      reject(new RetryableError("network", `${describe}: ${(err as Error).message}`, { cause: err }));
    }
  });
}

// Signals whose default action ends a process (stop, continue and ignored ones cannot kill it),
// by number. Numbers are the worker's platform's: the servers are GNU/Linux like the workers,
// and the common ones (HUP, INT, QUIT, ABRT, KILL, SEGV, PIPE, ALRM, TERM) are the same everywhere.
const NOT_KILLING = new Set(["SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGWINCH"]);
const KILLING_SIGNALS = new Map<number, string>();
for (const [name, number] of Object.entries(constants.signals)) {
  if (!NOT_KILLING.has(name) && !KILLING_SIGNALS.has(number)) KILLING_SIGNALS.set(number, name); // SIGABRT before its alias SIGIOT
}

/**
 * The signal a shell status of 128 + N stands for, or undefined: for a line the shell runs
 * itself (more than one simple command; one is exec'd and reports its own end, see
 * guardedCommandLine). A shell reports a child killed by signal N as status 128 + N, and no
 * shell can tell that status from a command that itself exits with 128 + N, so the status is
 * read as the signal, as it always was for a compound command under sshd's `sh -c`; a caller
 * for whom such a code means something lists it in okExitCodes and gets it back as the exit
 * code, or makes the template one simple command.
 */
function signalOfShellStatus(status: number, okExitCodes: readonly number[]): string | undefined {
  if (status <= 128 || okExitCodes.includes(status)) return undefined;
  return KILLING_SIGNALS.get(status - 128);
}

/** SIGKILL to the channel's session leader (a channel request). */
function signalLeader(channel: ClientChannel): void {
  try {
    channel.signal("KILL");
  } catch {
    // The channel is already closing.
  }
}

/** SIGKILL the command (channel request) and its process group (second exec), then close. */
function killRemote(client: Client, channel: ClientChannel, pid: number): void {
  signalLeader(channel);
  const close = (): void => {
    try {
      channel.close();
    } catch {
      // Already closed.
    }
  };
  try {
    client.exec(`kill -s KILL -- -${pid} 2>/dev/null; kill -s KILL ${pid} 2>/dev/null; true`, (err, killer) => {
      if (err) {
        close();
        return;
      }
      killer.resume();
      killer.stderr.resume();
      killer.on("close", close);
    });
  } catch {
    close();
  }
}

/**
 * Finds our `fleet-pid-<token> <pid>` line in stderr and removes it; everything else passes
 * through unchanged (login shells may print before it). Gives up after `searchBytes`.
 */
class PidMarker {
  pid: number | undefined;
  private readonly prefix: string;
  private pending: Buffer = Buffer.alloc(0);
  private seen = 0;
  private done = false;

  constructor(prefix: string) {
    this.prefix = prefix;
  }

  filter(chunk: Buffer, searchBytes: number): Buffer {
    if (this.done) return chunk;
    this.seen += chunk.length;
    let data = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    const out: Buffer[] = [];
    for (let newline = data.indexOf(0x0a); newline >= 0; newline = data.indexOf(0x0a)) {
      const line = data.subarray(0, newline).toString("latin1");
      if (line.startsWith(this.prefix)) {
        const pid = Number(line.slice(this.prefix.length));
        if (Number.isInteger(pid) && pid > 1) this.pid = pid;
        this.done = true;
        this.pending = Buffer.alloc(0);
        out.push(data.subarray(newline + 1));
        return Buffer.concat(out);
      }
      out.push(data.subarray(0, newline + 1));
      data = data.subarray(newline + 1);
    }
    if (this.seen > searchBytes) {
      this.done = true;
      out.push(data);
      data = Buffer.alloc(0);
    }
    this.pending = data;
    return Buffer.concat(out);
  }

  /** Whatever is still held back (a last line without newline). */
  flush(): Buffer {
    const rest = this.pending;
    this.pending = Buffer.alloc(0);
    return rest;
  }
}
