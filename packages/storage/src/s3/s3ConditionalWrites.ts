/**
 * Whether the server honours conditional writes (`PUT` with `If-None-Match: *`: 412 when the
 * key exists, nothing written). AWS S3 (since August 2024) and MinIO do; servers that do not
 * know the header ignore it and overwrite — so Fleet only relies on it once it has seen it
 * work: under IF_EXISTS=fail a write then costs one request (the PUT) instead of a HEAD and a
 * PUT, and the existence check is atomic instead of check-then-act.
 *
 * `auto` (the default) learns it on the first write that could use it: a probe object (a
 * random name under the storage's folder) is PUT twice with the header — the second PUT must be
 * refused with 412 — and then deleted. Until the answer is in, and for a minute after a probe
 * that failed (the server unreachable, the object not deletable), writes HEAD first, as with
 * `false`. `true` trusts the server without a probe.
 */
export type ConditionalWritesSetting = "auto" | boolean;

/** How long after a failed probe writes do without, before the next probe. */
const RETRY_PROBE_MS = 60_000;

export class ConditionalWrites {
  private verdict: boolean | undefined;
  private probing: Promise<boolean> | undefined;
  private retryAt = 0;

  /** `probe` resolves true when the server refused the second PUT with 412, false when it took it. */
  constructor(
    private readonly setting: ConditionalWritesSetting,
    private readonly probe: () => Promise<boolean>,
  ) {}

  /**
   * True once the server was seen to honour `If-None-Match: *` (or the setting says so). A
   * write that is aborted while the probe runs stops waiting for it (the probe runs on, bounded
   * by its requests' timeout, for the writes after it).
   */
  async usable(signal?: AbortSignal): Promise<boolean> {
    if (this.setting !== "auto") return this.setting;
    if (this.verdict !== undefined) return this.verdict;
    if (Date.now() < this.retryAt) return false;
    const probing = this.probeOnce();
    return signal ? untilAborted(probing, signal) : probing;
  }

  private probeOnce(): Promise<boolean> {
    this.probing ??= this.probe()
      .then(
        (honoured) => {
          this.verdict = honoured;
          return honoured;
        },
        () => {
          this.retryAt = Date.now() + RETRY_PROBE_MS;
          return false;
        },
      )
      .finally(() => {
        this.probing = undefined;
      });
    return this.probing;
  }

  /** What was learned: "honoured", "ignored", or "unknown" (not probed yet, or the probe failed). */
  get state(): "honoured" | "ignored" | "unknown" {
    const known = this.setting !== "auto" ? this.setting : this.verdict;
    return known === undefined ? "unknown" : known ? "honoured" : "ignored";
  }
}

/** `promise`, or a rejection with the signal's reason as soon as it aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
