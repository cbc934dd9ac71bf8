/**
 * Thrown by a handler that must stop now and run again later without using an attempt —
 * e.g. its run window closed mid-range. The runner moves the job to delayed until `until`.
 */
export class DelayJob extends Error {
  constructor(
    readonly until: Date,
    reason: string,
  ) {
    super(reason);
    this.name = "DelayJob";
  }
}
