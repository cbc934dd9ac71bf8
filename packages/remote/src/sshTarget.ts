import type { SshHostKey } from "./sshHostKey";

/**
 * One SSH server and how to log in to it: what the SFTP adapter's pool and remote commands
 * connect to. Credentials live here and nowhere else; labels and errors show
 * `user@host:port` only.
 */
export interface SshTarget {
  host: string;
  /** Default 22. */
  port?: number;
  username: string;
  /** A private key (PEM or OpenSSH format). Tried before the password when both are set. */
  privateKey?: Buffer | string;
  /** For an encrypted private key. */
  passphrase?: string;
  password?: string;
  /** REQUIRED: the host keys the server may present (no "accept any" mode). */
  hostKey: SshHostKey;
  /** Connect + handshake + authentication must finish within this; default 20 s. */
  readyTimeoutMs?: number;
  /** SSH-level keepalive interval; 0 disables; default 15 s. Three unanswered → dropped. */
  keepaliveIntervalMs?: number;
}

export const DEFAULT_SSH_PORT = 22;
export const DEFAULT_READY_TIMEOUT_MS = 20_000;
export const DEFAULT_KEEPALIVE_INTERVAL_MS = 15_000;

/** `user@host:port`, safe to log (IPv6 hosts in brackets). */
export function targetLabel(target: Pick<SshTarget, "host" | "port" | "username">): string {
  const host = target.host.includes(":") ? `[${target.host}]` : target.host;
  return `${target.username}@${host}:${target.port ?? DEFAULT_SSH_PORT}`;
}
