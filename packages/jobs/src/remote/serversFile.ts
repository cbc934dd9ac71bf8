import { checkCommandTemplate } from "@fleet/remote/remoteShell";
import { readFileSync } from "node:fs";
import { posix } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { parseDuration } from "@fleet/core/backoff";
import { ConfigError } from "@fleet/core/errors";
import { DEFAULT_REMOTE_ERROR_PATTERNS } from "@fleet/remote/remoteErrors";
import type { RemoteErrorPatterns } from "@fleet/remote/remoteErrors";
import { createHostKeyCheck } from "@fleet/remote/sshHostKey";
import type { SshHostKey } from "@fleet/remote/sshHostKey";
import type { SshTarget } from "@fleet/remote/sshTarget";

/**
 * The SSH servers Fleet may run commands on, and the commands it may run there: one YAML
 * file (SSH_SERVERS_FILE). Jobs name a server and one of its commands; they never carry a
 * command line, so whoever can enqueue a job can only run what an administrator wrote here,
 * with values quoted into `{placeholders}`. The file holds no secrets: keys, passwords and
 * passphrases are files it names (Docker and Kubernetes secrets mount as files).
 *
 *   servers:
 *     nas1:
 *       host: nas1.example.org
 *       port: 22                       # default 22
 *       user: migrate
 *       keyFile: /run/secrets/nas1_key # and/or passwordFile: /run/secrets/nas1_password
 *       knownHostsFile: /etc/fleet/known_hosts   # and/or fingerprint: SHA256:…
 *       timeout: 10m                   # default per command (default 5m)
 *       commands:
 *         start-export: /opt/export/start.sh --dir {dir}
 *         free-space: df -Pk {path}
 *       errorPatterns:                 # added to the defaults (case-insensitive regexes)
 *         permanent: ["quota exceeded"]
 *         retryable: ["export lock held"]
 *       builtinPaths: [/export, /srv/home]  # where folder-size and mkdir-p may work (default: nowhere)
 */

export interface RegisteredServer {
  name: string;
  target: SshTarget;
  /** Command name → template with `{placeholders}`. */
  commands: Readonly<Record<string, string>>;
  timeoutMs: number;
  errorPatterns: RemoteErrorPatterns;
  /** Environment variables exported before every command. */
  env: Readonly<Record<string, string>>;
  /** Files this entry was read from (keys, passwords, known_hosts): watched for changes. */
  files: readonly string[];
  /** Absolute folders the path builtins (folder-size, mkdir-p) may name, at or under; none: they are off. */
  builtinPaths: readonly string[];
}

const DEFAULT_TIMEOUT = "5m";
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

const regexList = z.array(z.string().min(1)).default([]);

const serverSchema = z
  .object({
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535).default(22),
    user: z.string().min(1),
    keyFile: z.string().min(1).optional(),
    keyPassphraseFile: z.string().min(1).optional(),
    passwordFile: z.string().min(1).optional(),
    knownHostsFile: z.string().min(1).optional(),
    fingerprint: z.string().min(1).optional(),
    timeout: z.string().default(DEFAULT_TIMEOUT),
    commands: z.record(z.string().regex(NAME, "command names: letters, digits, . _ -"), z.string().min(1)).default({}),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "variable names: letters, digits, _"), z.string()).default({}),
    errorPatterns: z.object({ permanent: regexList, retryable: regexList }).strict().default({ permanent: [], retryable: [] }),
    builtinPaths: z
      .array(z.string().refine((p) => p.startsWith("/") && !p.split("/").includes("..") && !p.includes("\0"), "an absolute path without '..'"))
      .default([]),
  })
  .strict();

const fileSchema = z
  .object({ servers: z.record(z.string().regex(NAME, "server names: letters, digits, . _ -"), serverSchema) })
  .strict();

/**
 * Reads and checks the servers file: every server needs a host key (known_hosts file or
 * fingerprint) and a key or password; every file it names must be readable.
 * Any problem is a ConfigError listing each, with the server it belongs to.
 */
export function loadServersFile(path: string, read: (file: string) => string = (file) => readFileSync(file, "utf8")): Map<string, RegisteredServer> {
  const where = `SSH_SERVERS_FILE ${path}`;
  let text: string;
  try {
    text = read(path);
  } catch (err) {
    throw new ConfigError([`${where}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`]);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    // The yaml package's message names the line and column (and quotes the line: no secrets here).
    throw new ConfigError([`${where}: is not valid YAML: ${(err as Error).message.split("\n")[0]} (a command containing ": " must be quoted)`]);
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${where}: ${i.path.join(".") || "(file)"}: ${i.message}`));
  }
  const issues: string[] = [];
  const servers = new Map<string, RegisteredServer>();
  for (const [name, s] of Object.entries(parsed.data.servers)) {
    const problem = (text: string) => issues.push(`${where}: servers.${name}: ${text}`);
    const readFile = (field: string, file: string): string | undefined => {
      try {
        return read(file);
      } catch (err) {
        problem(`${field} ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
        return undefined;
      }
    };
    // A secret file's trailing newline is not part of the secret (echo pw > file).
    const secret = (field: string, file: string | undefined): string | undefined =>
      file === undefined ? undefined : readFile(field, file)?.replace(/\r?\n$/, "");
    const privateKey = s.keyFile ? readFile("keyFile", s.keyFile) : undefined;
    const password = secret("passwordFile", s.passwordFile);
    const passphrase = secret("keyPassphraseFile", s.keyPassphraseFile);
    if (!s.keyFile && !s.passwordFile) problem("set keyFile or passwordFile");
    const hostKey: SshHostKey = {};
    if (s.knownHostsFile) {
      const lines = readFile("knownHostsFile", s.knownHostsFile);
      if (lines !== undefined) hostKey.knownHostsLine = lines;
    }
    if (s.fingerprint) hostKey.fingerprint = s.fingerprint;
    if (!s.knownHostsFile && !s.fingerprint) {
      problem(`set knownHostsFile or fingerprint (ssh-keyscan -p ${s.port} ${s.host} | ssh-keygen -lf -): unknown host keys are always refused`);
    } else if (hostKey.knownHostsLine !== undefined || hostKey.fingerprint !== undefined) {
      try {
        createHostKeyCheck(hostKey, s.host, s.port);
      } catch (err) {
        problem((err as Error).message);
      }
    }
    let timeoutMs = 0;
    try {
      timeoutMs = parseDuration(s.timeout);
    } catch {
      problem(`timeout ${JSON.stringify(s.timeout)} is not a duration like 30s, 5m, 2h`);
    }
    const patterns = (list: readonly string[], kind: string): RegExp[] =>
      list.flatMap((source) => {
        try {
          return [new RegExp(source, "i")];
        } catch (err) {
          problem(`errorPatterns.${kind}: ${JSON.stringify(source)} is not a regular expression (${(err as Error).message})`);
          return [];
        }
      });
    // Every template is compiled now: a placeholder quoting cannot protect stops startup.
    for (const [command, template] of Object.entries(s.commands)) {
      try {
        checkCommandTemplate(template);
      } catch (err) {
        problem(`commands.${command}: ${(err as Error).message}`);
      }
    }
    servers.set(name, {
      name,
      target: {
        host: s.host,
        port: s.port,
        username: s.user,
        ...(privateKey !== undefined ? { privateKey } : {}),
        ...(passphrase !== undefined ? { passphrase } : {}),
        ...(password !== undefined ? { password } : {}),
        hostKey,
      },
      commands: s.commands,
      timeoutMs,
      env: s.env,
      files: [s.keyFile, s.keyPassphraseFile, s.passwordFile, s.knownHostsFile].filter((f): f is string => f !== undefined),
      builtinPaths: s.builtinPaths.map((p) => posix.normalize(p).replace(/(.)\/$/, "$1")),
      errorPatterns: {
        permanent: [...patterns(s.errorPatterns.permanent, "permanent"), ...DEFAULT_REMOTE_ERROR_PATTERNS.permanent],
        retryable: [...patterns(s.errorPatterns.retryable, "retryable"), ...DEFAULT_REMOTE_ERROR_PATTERNS.retryable],
      },
    });
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return servers;
}
