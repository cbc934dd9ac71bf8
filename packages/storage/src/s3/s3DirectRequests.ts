import http from "node:http";
import https from "node:https";
import type { HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Sha256 } from "@smithy/core/checksum";
import { SignatureV4 } from "@smithy/signature-v4";

/**
 * HEAD and single PUT of small objects without the AWS SDK. Per request the SDK spends about
 * 1.5 ms of CPU (middleware stack, endpoint rules, schemas, retry tokens) on a 4 KiB PUT that
 * costs s3rver as much to store; these requests cost ~0.3 ms. With thousands of small files a
 * second, that CPU is the difference (PERFORMANCE.md P4).
 *
 * Nothing here decides where or how to sign: the SDK does, once. The first HEAD of a storage
 * goes through the SDK with a middleware that records the signed request (protocol, host,
 * path, region of the credential scope); it is signed again here by the SDK's own SigV4 signer
 * (@smithy/signature-v4, configured as S3Client configures it) with the same date and signed
 * headers, and the direct path is used only when both Authorization headers are equal and the
 * path is the prefix plus this module's encoding of the key. Anything unusual (another signing
 * algorithm or service, a path it cannot explain) leaves every request on the SDK.
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
  /** Scoped to the region the SDK signed for. */
  signer: SignatureV4;
}

/** What SignatureV4 needs of credentials; the SDK's provider caches and refreshes them. */
type CredentialProvider = () => Promise<{ accessKeyId: string; secretAccessKey: string; sessionToken?: string }>;

export interface DirectAgents {
  http: http.Agent;
  https: https.Agent;
}

export interface DirectSettings {
  requestTimeoutMs: number;
}

/** Bodies above this go through the SDK: the per-request cost no longer matters there. */
export const DIRECT_PUT_MAX_BYTES = 1024 * 1024;

/**
 * The most of a direct answer's body read: HEAD and PUT answer with nothing, or an error
 * document of a few hundred bytes. Past it the answer is cut and the SDK asks again.
 */
const MAX_DIRECT_ANSWER_BYTES = 64 * 1024;

const NOT_HANDLED = { handled: false } as const;

/** A conditional PUT's answer when the key already exists (412 Precondition Failed). */
export const EXISTS = Symbol("exists");

export class S3DirectRequests {
  private learned: Learned | undefined;
  private learning = false;
  private disabled = false;
  /** The SDK's credential provider (it caches and refreshes). */
  private readonly credentials: CredentialProvider;

  /** After a 429 or 5xx: the direct path rests until then and the SDK's backoff governs. */
  private restingUntil = 0;

  constructor(
    private readonly client: S3Client,
    private readonly agents: DirectAgents,
    private readonly settings: DirectSettings,
  ) {
    const provider = (client.config as { credentials?: unknown }).credentials;
    if (typeof provider !== "function") this.disabled = true;
    this.credentials = provider as CredentialProvider;
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
    this.restIfOverloaded(answer.status);
    return NOT_HANDLED;
  }

  /**
   * A single PUT; the ETag header of a 200. With `if-none-match: *` among the headers (a
   * conditional write), a 412 is an answer too: EXISTS, the key was taken.
   */
  async put(objectKey: string, body: Buffer, headers: Record<string, string>, bodySha256: string, signal?: AbortSignal): Promise<Direct<string | undefined | typeof EXISTS>> {
    if (body.length > DIRECT_PUT_MAX_BYTES) return NOT_HANDLED;
    const answer = await this.send("PUT", objectKey, { ...headers, "content-length": String(body.length) }, body, bodySha256, signal);
    if (answer?.status === 412 && headers["if-none-match"] === "*") return { handled: true, value: EXISTS };
    if (answer && answer.status !== 200) this.restIfOverloaded(answer.status);
    if (answer?.status !== 200) return NOT_HANDLED;
    const etag = answer.headers.etag;
    return { handled: true, value: Array.isArray(etag) ? etag[0] : etag };
  }

  /** 429 / 5xx: the server asks for less, so no extra direct attempt ahead of the SDK's backed-off retries for a while. */
  private restIfOverloaded(status: number): void {
    if (status === 429 || status >= 500) this.restingUntil = Date.now() + OVERLOAD_REST_MS;
  }

  private async learn(request: CapturedRequest, objectKey: string): Promise<void> {
    const recorded = headerOf(request.headers, "authorization");
    const region = /^AWS4-HMAC-SHA256 Credential=[^/]+\/\d{8}\/([^/]+)\/s3\/aws4_request, /.exec(recorded ?? "")?.[1];
    const encoded = encodeKeyPath(objectKey);
    const protocol = request.protocol === "https:" ? "https:" : request.protocol === "http:" ? "http:" : undefined;
    const host = headerOf(request.headers, "host");
    if (!region || !protocol || !host || !request.path.endsWith(encoded)) {
      this.disabled = true;
      return;
    }
    const signer = s3RequestSigner(region, this.credentials);
    if ((await resignAsRecorded(signer, request)) !== recorded) {
      this.disabled = true;
      return;
    }
    this.learned = {
      protocol,
      hostname: request.hostname,
      port: request.port === undefined ? "" : String(request.port),
      host,
      pathPrefix: request.path.slice(0, request.path.length - encoded.length),
      signer,
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
    if (!target || Date.now() < this.restingUntil) return undefined;
    const path = target.pathPrefix + encodeKeyPath(objectKey);
    // The body stays out of the signer: its sha256 is known (none: the signer adds that of "").
    const headers: Record<string, string> = { host: target.host, ...extra };
    if (bodySha256) headers["x-amz-content-sha256"] = bodySha256;
    // The SDK's clock correction (learned from a RequestTimeTooSkewed answer), read each time: a
    // host whose clock is off would otherwise have every direct request refused and sent again.
    const offset = Number((this.client.config as { systemClockOffset?: number }).systemClockOffset ?? 0);
    const signed = await target.signer.sign({ method, protocol: target.protocol, hostname: target.hostname, path, query: {}, headers }, { signingDate: new Date(Date.now() + offset) });
    const transport = target.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = transport.request(
        {
          protocol: target.protocol,
          hostname: target.hostname,
          port: target.port || undefined,
          method,
          path,
          headers: signed.headers,
          agent: target.protocol === "https:" ? this.agents.https : this.agents.http,
          signal,
        },
        (res) => {
          // The body (empty, or an error document the SDK will fetch again) is read to its end
          // to free the socket, but only so much of it: a body without end (a hostile or broken
          // server, never idle long enough for the timeout) held the request for ever. Cut,
          // the answer is the SDK's to get, and the SDK's answers are bounded (s3ResponseLimit.ts).
          let received = 0;
          res.on("data", (chunk: Buffer) => {
            received += chunk.length;
            if (received <= MAX_DIRECT_ANSWER_BYTES) return;
            res.destroy();
            resolve(undefined);
          });
          res.once("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
          res.once("error", () => resolve(undefined));
        },
      );
      req.setTimeout(this.settings.requestTimeoutMs, () => {
        // A TimeoutError (classified timeout) that the adapter names with its operation and key.
        req.destroy(Object.assign(new Error(`no answer for ${this.settings.requestTimeoutMs} ms`), { name: "TimeoutError" }));
      });
      req.once("error", (err) => {
        // An abort is the caller's; a timeout is final (the SDK would wait as long again);
        // anything else (a reused socket the server had closed) is worth one SDK attempt.
        if (signal?.aborted || err.name === "TimeoutError") reject(err);
        else resolve(undefined);
      });
      req.end(body);
    });
  }
}

/**
 * The SDK's own SigV4 signer, configured as S3Client configures it for S3: paths arrive
 * encoded (encodeKeyPath) and are signed as they are, never encoded again or normalised.
 * `Sha256` (node:crypto) is the hash S3Client passes it; @smithy/hash-node now lives in @smithy/core.
 */
export function s3RequestSigner(region: string, credentials: CredentialProvider): SignatureV4 {
  return new SignatureV4({ service: "s3", region, credentials, sha256: Sha256, uriEscapePath: false });
}

/**
 * The Authorization header `signer` gives a request the SDK signed, at the SDK's x-amz-date and
 * over the headers the SDK signed; undefined for a request it would not sign the same way
 * (a query string, no x-amz-date).
 */
export async function resignAsRecorded(signer: SignatureV4, request: CapturedRequest): Promise<string | undefined> {
  const date = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(headerOf(request.headers, "x-amz-date") ?? "");
  const signedList = /SignedHeaders=([a-z0-9;-]+),/.exec(headerOf(request.headers, "authorization") ?? "")?.[1];
  if (!date || !signedList || (request.query && Object.keys(request.query).length > 0)) return undefined;
  const [, year, month, day, hours, minutes, seconds] = date;
  const signedNames = new Set(signedList.split(";"));
  // The signer adds x-amz-date (from the date) and x-amz-security-token (from the credentials).
  signedNames.delete("x-amz-date");
  signedNames.delete("x-amz-security-token");
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers)) if (signedNames.has(name.toLowerCase())) headers[name.toLowerCase()] = value;
  const signed = await signer.sign(
    { method: request.method, protocol: request.protocol, hostname: request.hostname, path: request.path, query: {}, headers },
    { signingDate: new Date(`${year}-${month}-${day}T${hours}:${minutes}:${seconds}Z`) },
  );
  return signed.headers["authorization"];
}

/** S3's encoding of a key in a path: every segment like encodeURIComponent, plus ! ' ( ) *. */
export function encodeKeyPath(key: string): string {
  return key
    .split("/")
    .map((segment) => encodeURIComponent(segment).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`))
    .join("/");
}

/** What the SDK's HttpRequest looks like after signing (the fields used here). */
export interface CapturedRequest {
  method: string;
  protocol: string;
  hostname: string;
  port?: number;
  path: string;
  query?: Record<string, unknown>;
  headers: Record<string, string>;
}

// How long the direct path rests after the server said it is overloaded.
const OVERLOAD_REST_MS = 5_000;

function headerOf(headers: Record<string, string>, name: string): string | undefined {
  for (const [key, value] of Object.entries(headers)) if (key.toLowerCase() === name) return value;
  return undefined;
}
