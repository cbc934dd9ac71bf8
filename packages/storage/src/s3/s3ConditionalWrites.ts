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

  /** True once the server was seen to honour `If-None-Match: *` (or the setting says so). */
  async usable(): Promise<boolean> {
    if (this.setting !== "auto") return this.setting;
    if (this.verdict !== undefined) return this.verdict;
    if (Date.now() < this.retryAt) return false;
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
