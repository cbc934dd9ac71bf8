import http from "node:http";
import https from "node:https";
import { S3Client } from "@aws-sdk/client-s3";
import { limitParsedAnswers } from "./s3ResponseLimit";

/** What the S3 client needs; the defaults live in S3Storage. */
export interface S3ClientSettings {
  region: string;
  endpoint?: string;
  forcePathStyle?: boolean;
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  maxSockets: number;
  requestTimeoutMs: number;
  connectTimeoutMs: number;
  maxAttempts: number;
}

export interface S3Agents {
  http: http.Agent;
  https: https.Agent;
}

/** The keep-alive connection pool of one storage, shared by its SDK client and its direct requests. */
export function createS3Agents(maxSockets: number): S3Agents {
  const agentOptions = { keepAlive: true, maxSockets };
  return { http: new http.Agent(agentOptions), https: new https.Agent(agentOptions) };
}

/**
 * One client per storage, shared by every transfer: its keep-alive agents are the connection
 * pool, so 64 files in flight reuse sockets instead of paying a TCP (and TLS) setup per file.
 */
export function createS3Client(settings: S3ClientSettings, agents: S3Agents): S3Client {
  const client = new S3Client({
    region: settings.region,
    endpoint: settings.endpoint,
    forcePathStyle: settings.forcePathStyle,
    // Absent: the SDK's default chain (env, shared config, SSO, instance/container roles).
    credentials: settings.credentials,
    // Fleet retries with its own backoff and records each attempt; the SDK retries once more
    // only for the blips (a reused socket the server had just closed) that should not cost
    // a whole file attempt.
    maxAttempts: settings.maxAttempts,
    // The SDK's default sends stream bodies aws-chunked with a checksum trailer, which some
    // S3-compatible servers store as data without an error (s3rver does). Fleet verifies
    // size and sha256 itself, so it needs no SDK checksums; real S3 still gets Content-MD5.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    requestHandler: {
      httpAgent: agents.http,
      httpsAgent: agents.https,
      connectionTimeout: settings.connectTimeoutMs,
      // An idle timeout, not a deadline: a 8 MiB part on a slow link may take long, but a
      // socket with no progress for this long is dead.
      socketTimeout: settings.requestTimeoutMs,
    },
  });
  // A listing page that ignores max-keys is not read into memory whole (s3ResponseLimit.ts).
  limitParsedAnswers(client);
  return client;
}
