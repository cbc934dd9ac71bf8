import { mkdir, rm, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { createStorage } from "@fleet/storage/createStorage";
import type { Storage } from "@fleet/storage/storage";
import type { StorageConnection } from "@fleet/storage/storageConnection";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";

/**
 * The servers of the remote measurements, started by the bench and stopped at its end: s3rver
 * (real HTTP S3 on loopback, the harness the tests use) and a private OpenSSH sshd. Each run
 * gets a fresh bucket or directory, so no run finds another's objects.
 */

/** A place on a remote server one run writes to, as Fleet and as rclone address it. */
export interface RemoteTarget {
  /** DESTINATION_URL for the workers. */
  url: string;
  /** Worker environment: the destination's credentials or key files. */
  env: NodeJS.ProcessEnv;
  /** `remote:path` for rclone (the remote is configured by `rcloneEnv`). */
  rclonePath: string;
  /** An adapter on the same place, for the bench's own checks; close() it after use. */
  open(): Storage;
}

export interface RemoteEndpoint {
  kind: "s3" | "sftp";
  /** RCLONE_CONFIG_<REMOTE>_* variables: rclone's remote for this server, no config file. */
  rcloneEnv: NodeJS.ProcessEnv;
  /** A new, empty bucket (S3) or directory (SFTP) named after `name`. */
  fresh(name: string): Promise<RemoteTarget>;
  stop(): Promise<void>;
}

export const RCLONE_S3_REMOTE = "fleetbenchs3";
export const RCLONE_SFTP_REMOTE = "fleetbenchsftp";

export async function startS3Endpoint(): Promise<RemoteEndpoint> {
  const server: S3Server = await startS3Server();
  const credentials = { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey };
  const connection: StorageConnection = { s3: { region: server.region, credentials } };
  const R = `RCLONE_CONFIG_${RCLONE_S3_REMOTE.toUpperCase()}`;
  let made = 0;
  return {
    kind: "s3",
    rcloneEnv: {
      [`${R}_TYPE`]: "s3",
      [`${R}_PROVIDER`]: "Other",
      [`${R}_ENDPOINT`]: server.endpoint,
      [`${R}_REGION`]: server.region,
      [`${R}_ACCESS_KEY_ID`]: server.accessKeyId,
      [`${R}_SECRET_ACCESS_KEY`]: server.secretAccessKey,
      [`${R}_FORCE_PATH_STYLE`]: "true",
    },
    async fresh(name) {
      // Bucket names: lowercase letters, digits and "-"; made unique per bench run.
      const bucket = `${name.toLowerCase().replace(/[^a-z0-9-]/g, "-")}-${++made}`.slice(0, 63);
      await server.createBucket(bucket);
      const url = `s3://${bucket}?endpoint=${encodeURIComponent(server.endpoint)}&region=${server.region}&pathStyle=true`;
      return {
        url,
        env: { DESTINATION_S3_ACCESS_KEY_ID: server.accessKeyId, DESTINATION_S3_SECRET_ACCESS_KEY: server.secretAccessKey },
        rclonePath: `${RCLONE_S3_REMOTE}:${bucket}`,
        open: () => createStorage(url, connection),
      };
    },
    stop: () => server.stop(),
  };
}

/**
 * sshd serves the whole filesystem (no chroot), so the run directories are plain directories
 * under `dirFor(name)`: on the bench's data directory (a tmpfs, ideally), not on the server's
 * temp dir, and discarded like every other copy (see destinationTrees.ts).
 */
export async function startSftpEndpoint(keyDir: string, dirFor: (name: string) => Promise<string>): Promise<RemoteEndpoint> {
  const server: SshServer = await startSshServer();
  try {
    await mkdir(keyDir, { recursive: true });
    const keyFile = resolve(keyDir, "client_ed25519");
    const knownHostsFile = resolve(keyDir, "known_hosts");
    await writeFile(keyFile, server.privateKey, { mode: 0o600 });
    await writeFile(knownHostsFile, `${server.knownHostsLine}\n`);
    const connection: StorageConnection = { ssh: { privateKey: server.privateKey, hostKey: { knownHostsLine: server.knownHostsLine } } };
    const R = `RCLONE_CONFIG_${RCLONE_SFTP_REMOTE.toUpperCase()}`;
    return {
      kind: "sftp",
      rcloneEnv: {
        [`${R}_TYPE`]: "sftp",
        [`${R}_HOST`]: server.host,
        [`${R}_PORT`]: String(server.port),
        [`${R}_USER`]: server.user,
        [`${R}_KEY_FILE`]: keyFile,
        [`${R}_KNOWN_HOSTS_FILE`]: knownHostsFile,
        // By default rclone checks every upload with `md5sum FILE` run through the user's
        // login shell, one SSH session per file: that measures the shell (root's .bashrc runs
        // `pyenv init` here: 0.2 s a file, 6 files/s), not the transfer. Fleet's VERIFY=write
        // runs no remote command either; both still compare sizes.
        [`${R}_DISABLE_HASHCHECK`]: "true",
      },
      async fresh(name) {
        const dir = await dirFor(name);
        await mkdir(dir, { recursive: true });
        const url = `sftp://${server.user}@${server.host}:${server.port}${dir}`;
        return {
          url,
          env: { DESTINATION_SSH_KEY_FILE: keyFile, DESTINATION_SSH_KNOWN_HOSTS_FILE: knownHostsFile },
          rclonePath: `${RCLONE_SFTP_REMOTE}:${dir}`,
          open: () => createStorage(url, connection),
        };
      },
      stop: async () => {
        await rm(keyDir, { recursive: true, force: true });
        await server.stop();
      },
    };
  } catch (err) {
    await server.stop();
    throw err;
  }
}
