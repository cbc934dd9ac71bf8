import http from "node:http";
import https from "node:https";
import type { HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { RetryableError } from "@fleet/core/errors";
import { EMPTY_SHA256, SigningKeyCache, authorization, encodeKeyPath, signRequest } from "./s3Signer";
import type { SigningCredentials, SigningScope } from "./s3Signer";

/**
 * HEAD and single PUT of small objects without the AWS SDK. Per request the SDK spends about
 * 1.5 ms of CPU (middleware stack, endpoint rules, schemas, retry tokens) on a 4 KiB PUT that
 * costs s3rver as much to store; these requests cost ~0.3 ms. With thousands of small files a
 * second, that CPU is the difference (PERFORMANCE.md P4).
 *
 * Nothing here decides where or how to sign: the SDK does, once. The first HEAD of a storage
 * goes through the SDK with a middleware that records the signed request (protocol, host,
 * path, region of the credential scope); it is signed again here with the same date and
 * headers, and the direct path is used only when both signatures are equal and the path is
 * the prefix plus this module's encoding of the key. Anything unusual (another signing
 * algorithm, a path it cannot explain) leaves every request on the SDK.
 *
 * Only the expected answers are handled here: 200 (and 404 for a HEAD). Any other status or a
 * broken connection returns "use the SDK", which repeats the request with its own retries,
 * clock-skew correction and error parsing, so failures are classified exactly as before.
 */

export type Direct<T> = { handled: true; value: T } | { handled: false };

interface Learned {
  protocol: "http:" | "https:";
  hostname: string;
  port: string;
  /** The Host header the SDK signed. */
  host: string;
  /** The path before the encoded key: `/bucket/` (path-style) or `/`. */
  pathPrefix: string;
  scope: SigningScope;
}

export interface DirectAgents {
  http: http.Agent;
  https: https.Agent;
}

export interface DirectSettings {
  requestTimeoutMs: number;
}

/** Bodies above this go through the SDK: the per-request cost no longer matters there. */
export const DIRECT_PUT_MAX_BYTES = 1024 * 1024;

const NOT_HANDLED = { handled: false } as const;

export class S3DirectRequests {
  private learned: Learned | undefined;
  private learning = false;
  private disabled = false;
  private readonly keys = new SigningKeyCache();
  /** Once learned: the SDK's credential provider (it caches and refreshes). */
  private readonly credentials: () => Promise<SigningCredentials>;

  constructor(
    client: S3Client,
    private readonly agents: DirectAgents,
    private readonly settings: DirectSettings,
  ) {
    const provider = (client.config as { credentials?: unknown }).credentials;
    if (typeof provider !== "function") this.disabled = true;
    this.credentials = provider as () => Promise<SigningCredentials>;
  }

  get ready(): boolean {
    return this.learned !== undefined;
  }

  /**
   * Has `command` (a HeadObject of `objectKey`, about to be sent by the SDK) teach the direct
   * path, unless it is ready, disabled, or another command is already teaching it. Call the
   * result, if any, once the command is settled.
   */
  learnFrom(command: HeadObjectCommand, objectKey: string): (() => void) | undefined {
    if (this.learned || this.disabled || this.learning) return undefined;
    this.learning = true;
    type Middleware = Parameters<typeof command.middlewareStack.addRelativeTo>[0];
    const capture = (next: (args: { request: unknown }) => Promise<unknown>) => async (args: { request: unknown }) => {
      try {
        await this.learn(args.request as CapturedRequest, objectKey);
      } catch {
        this.disabled = true; // an unexpected request shape: stay on the SDK
      } finally {
        this.learning = false;
      }
      return next(args);
    };
    command.middlewareStack.addRelativeTo(capture as unknown as Middleware, {
      relation: "after",
      toMiddleware: "httpSigningMiddleware",
      name: "fleetLearnDirectRequests",
      override: true,
    });
    // For a command that failed before it was signed (credentials): the next HEAD teaches.
    return () => {
      this.learning = false;
    };
  }

  /** HEAD: the response headers, null when the object does not exist. */
  async head(objectKey: string, signal?: AbortSignal): Promise<Direct<http.IncomingHttpHeaders | null>> {
    const answer = await this.send("HEAD", objectKey, {}, undefined, undefined, signal);
    if (!answer) return NOT_HANDLED;
    if (answer.status === 200) return { handled: true, value: answer.headers };
    if (answer.status === 404) return { handled: true, value: null };
    return NOT_HANDLED;
  }

  /** A single PUT; the ETag header of a 200. */
  async put(objectKey: string, body: Buffer, headers: Record<string, string>, bodySha256: string, signal?: AbortSignal): Promise<Direct<string | undefined>> {
    if (body.length > DIRECT_PUT_MAX_BYTES) return NOT_HANDLED;
    const answer = await this.send("PUT", objectKey, { ...headers, "content-length": String(body.length) }, body, bodySha256, signal);
    if (answer?.status !== 200) return NOT_HANDLED;
    const etag = answer.headers.etag;
    return { handled: true, value: Array.isArray(etag) ? etag[0] : etag };
  }

  private async learn(request: CapturedRequest, objectKey: string): Promise<void> {
    const auth = headerOf(request.headers, "authorization");
    const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/.exec(auth ?? "");
    const encoded = encodeKeyPath(objectKey);
    if (!m || request.query && Object.keys(request.query).length > 0 || !request.path.endsWith(encoded)) {
      this.disabled = true;
      return;
    }
    const [, accessKeyId, , region, service, signedList, signature] = m as unknown as string[];
    const credentials = await this.credentials();
    const date = headerOf(request.headers, "x-amz-date") ?? "";
    const lower: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers)) lower[name.toLowerCase()] = value;
    const payloadSha256 = lower["x-amz-content-sha256"] ?? "";
    const scope = { region: region!, service: service! };
    const mine = authorization({ method: request.method, path: request.path, headers: lower, payloadSha256 }, credentials, scope, date, signedList!.split(";"), this.keys);
    const protocol = request.protocol === "https:" ? "https:" : request.protocol === "http:" ? "http:" : undefined;
    if (!protocol || credentials.accessKeyId !== accessKeyId || !mine.endsWith(`Signature=${signature}`) || !lower["host"]) {
      this.disabled = true;
      return;
    }
    this.learned = {
      protocol,
      hostname: request.hostname,
      port: request.port === undefined ? "" : String(request.port),
      host: lower["host"],
      pathPrefix: request.path.slice(0, request.path.length - encoded.length),
      scope,
    };
  }

  /** The status and headers, or undefined: not learned yet, or the connection failed (use the SDK). */
  private async send(
    method: "HEAD" | "PUT",
    objectKey: string,
    extra: Record<string, string>,
    body: Buffer | undefined,
    bodySha256: string | undefined,
    signal?: AbortSignal,
  ): Promise<{ status: number; headers: http.IncomingHttpHeaders } | undefined> {
    const target = this.learned;
    if (!target) return undefined;
    const path = target.pathPrefix + encodeKeyPath(objectKey);
    const request = { method, path, headers: { host: target.host, ...extra }, payloadSha256: bodySha256 ?? EMPTY_SHA256 };
    signRequest(request, await this.credentials(), target.scope, new Date(), this.keys);
    const transport = target.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = transport.request(
        {
          protocol: target.protocol,
          hostname: target.hostname,
          port: target.port || undefined,
          method,
          path,
          headers: request.headers,
          agent: target.protocol === "https:" ? this.agents.https : this.agents.http,
          signal,
        },
        (res) => {
          // The body (empty, or an error document the SDK will fetch again) frees the socket.
          res.resume();
          res.once("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
          res.once("error", () => resolve(undefined));
        },
      );
      req.setTimeout(this.settings.requestTimeoutMs, () => {
        req.destroy(new RetryableError("timeout", `${method} ${objectKey}: no answer for ${this.settings.requestTimeoutMs} ms`));
      });
      req.once("error", (err) => {
        // An abort is the caller's; a timeout is final (the SDK would wait as long again);
        // anything else (a reused socket the server had closed) is worth one SDK attempt.
        if (signal?.aborted || err instanceof RetryableError) reject(err);
        else resolve(undefined);
      });
      req.end(body);
    });
  }
}

/** What the SDK's HttpRequest looks like after signing (the fields used here). */
interface CapturedRequest {
  method: string;
  protocol: string;
  hostname: string;
  port?: number;
  path: string;
  query?: Record<string, unknown>;
  headers: Record<string, string>;
}

function headerOf(headers: Record<string, string>, name: string): string | undefined {
  for (const [key, value] of Object.entries(headers)) if (key.toLowerCase() === name) return value;
  return undefined;
}
