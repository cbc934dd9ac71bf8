import type { Client, ConnectConfig } from "ssh2";
import { classifyError } from "@fleet/core/classifyError";
import { FleetError, PermanentError, RetryableError } from "@fleet/core/errors";
import type { PermanentCategory, RetryableCategory } from "@fleet/core/errors";
import { createHostKeyCheck } from "./sshHostKey";
import {
  DEFAULT_KEEPALIVE_INTERVAL_MS,
  DEFAULT_READY_TIMEOUT_MS,
  DEFAULT_SSH_PORT,
  targetLabel,
} from "./sshTarget";
import type { SshTarget } from "./sshTarget";

/**
 * Opens one authenticated SSH connection with the server's host key verified. Every failure
 * comes out as a FleetError naming `user@host:port` (never a password or key):
 * - host key unknown or different → PermanentError("auth-failed"), before any credential or
 *   data is sent (ssh2 checks the key during key exchange, before authentication);
 * - credentials refused → PermanentError("auth-failed");
 * - refused, reset, unreachable, handshake timeout → RetryableError("network" | "timeout");
 * - a bad private key or missing credentials → PermanentError("bad-config").
 *
 * The returned client has an 'error' listener (an unheard 'error' would crash the process);
 * callers watch 'close' to learn that it dropped.
 */
export function connectSsh(target: SshTarget, signal?: AbortSignal): Promise<Client> {
  const label = targetLabel(target);
  if (signal?.aborted) return Promise.reject(new RetryableError("interrupted", `connect to ${label}: aborted`));
  if (target.privateKey === undefined && target.password === undefined) {
    return Promise.reject(new PermanentError("bad-config", `connect to ${label}: no private key and no password configured`));
  }
  let check;
  try {
    check = createHostKeyCheck(target.hostKey, target.host, target.port ?? DEFAULT_SSH_PORT);
  } catch (err) {
    return Promise.reject(err);
  }
  const hostKeyCheck = check;

  const config: ConnectConfig = {
    host: target.host,
    port: target.port ?? DEFAULT_SSH_PORT,
    username: target.username,
    privateKey: target.privateKey,
    passphrase: target.passphrase,
    password: target.password,
    readyTimeout: target.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS,
    keepaliveInterval: target.keepaliveIntervalMs ?? DEFAULT_KEEPALIVE_INTERVAL_MS,
    keepaliveCountMax: 3,
    hostVerifier: (key: Buffer) => hostKeyCheck.verify(key),
    ...(hostKeyCheck.algorithms ? { algorithms: { serverHostKey: hostKeyCheck.algorithms as never } } : {}),
  };

  return new Promise<Client>((resolve, reject) => {
    // ssh2 (and its crypto) is loaded with the first connection, not with this module: code that
    // only loads the processors' contracts (scheduler, dashboard, CLI) never pays for it.
    const { Client: SshClient } = require("ssh2") as typeof import("ssh2");
    const client = new SshClient();
    let settled = false;
    const fail = (err: unknown): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener("abort", onAbort);
      client.destroy();
      reject(hostKeyCheck.refusal() ?? connectError(label, err));
    };
    const onAbort = (): void => fail(new RetryableError("interrupted", `connect to ${label}: aborted`));
    signal?.addEventListener("abort", onAbort, { once: true });
    client.on("error", fail);
    client.once("close", () => fail(Object.assign(new Error("connection closed during the handshake"), { code: "ECONNRESET" })));
    client.once("ready", () => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener("abort", onAbort);
      client.removeListener("error", fail);
      // Later errors (keepalive timeout, reset) are followed by 'close', which owners watch.
      client.on("error", () => undefined);
      resolve(client);
    });
    try {
      client.connect(config);
    } catch (err) {
      // ssh2 parses the private key synchronously: a bad or encrypted key without passphrase.
      fail(new PermanentError("bad-config", `connect to ${label}: the private key cannot be used: ${(err as Error).message}`, { cause: err }));
    }
  });
}

/** A connection failure as a FleetError whose message says where. */
export function connectError(label: string, err: unknown): FleetError {
  if (err instanceof FleetError) return err;
  const classified = classifyError(err);
  const message = `connect to ${label}: ${classified.message}`;
  return classified.retryable
    ? new RetryableError(classified.category as RetryableCategory, message, { cause: err })
    : new PermanentError(classified.category as PermanentCategory, message, { cause: err });
}
