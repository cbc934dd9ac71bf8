import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { SshServer } from "./sshServer";

/**
 * A servers file (SSH_SERVERS_FILE) that registers test sshds, and the client files its entries
 * point at. The fault and account tests each wrote the same key, known_hosts and YAML lines by
 * hand; they now say only what their servers run.
 */

/** Where a servers file entry finds the client's private key and the server's host key. */
export interface SshClientFiles {
  keyFile: string;
  knownHostsFile: string;
}

/**
 * One entry of a servers file: how to reach the server, then any other field (commands,
 * timeout, env, errorPatterns, …). Each value is written as JSON, which YAML reads as it is.
 */
export interface ServerEntry extends SshClientFiles {
  host: string;
  port: number;
  user: string;
  [field: string]: unknown;
}

/** Writes `ssh`'s client key (`<prefix>key`, mode 600) and its host key line (`<prefix>known_hosts`) into `dir`. */
export async function writeSshClientFiles(ssh: SshServer, dir: string, prefix = ""): Promise<SshClientFiles> {
  const files = { keyFile: join(dir, `${prefix}key`), knownHostsFile: join(dir, `${prefix}known_hosts`) };
  await writeFile(files.keyFile, ssh.privateKey, { mode: 0o600 });
  await writeFile(files.knownHostsFile, `${ssh.knownHostsLine}\n`);
  return files;
}

/** The entry that reaches `ssh` as its user with `client`'s files, then `fields` (which may override any of those). */
export function sshServerEntry(ssh: SshServer, client: SshClientFiles, fields: Record<string, unknown> = {}): ServerEntry {
  return { host: ssh.host, port: ssh.port, user: ssh.user, keyFile: client.keyFile, knownHostsFile: client.knownHostsFile, ...fields };
}

/** Writes `servers` (name → entry) as a servers file at `path`; returns `path`. */
export async function writeServersFile(path: string, servers: Record<string, ServerEntry>): Promise<string> {
  const entries = Object.entries(servers).map(([name, fields]) => `  ${name}:\n${Object.entries(fields).map(([key, value]) => `    ${key}: ${JSON.stringify(value)}\n`).join("")}`);
  await writeFile(path, `servers:\n${entries.join("")}`);
  return path;
}

/**
 * The usual case: `ssh`'s client files and servers.yaml in `dir`, with one entry per name of
 * `servers` reaching `ssh`, then its fields. Returns the servers file's path.
 */
export async function writeSshServersFile(ssh: SshServer, dir: string, servers: Record<string, Record<string, unknown>>): Promise<string> {
  const client = await writeSshClientFiles(ssh, dir);
  const entries = Object.fromEntries(Object.entries(servers).map(([name, fields]) => [name, sshServerEntry(ssh, client, fields)]));
  return writeServersFile(join(dir, "servers.yaml"), entries);
}
