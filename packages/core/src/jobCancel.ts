import type { Redis } from "ioredis";

/**
 * Cancelling a running job across processes: BullMQ can abort a job only in the worker that
 * runs it (`Worker.cancelJob`), so a producer (the dashboard, the CLI) publishes the request on
 * one channel per fleet prefix, and every JobRunner subscribed to it aborts the job if it holds
 * it. The job's handler sees its AbortSignal fire with reason CANCEL_REASON, leaves every item
 * done or retryable, and the job fails without retry ("cancelled").
 */
export const CANCEL_REASON = "cancelled";

export interface CancelRequest {
  queue: string;
  jobId: string;
}

export function cancelChannel(prefix: string): string {
  return `${prefix}:cancel-job`;
}

/** Publishes a cancel request; resolves to the number of runners that received it. */
export async function requestCancel(redis: Redis, prefix: string, request: CancelRequest): Promise<number> {
  return redis.publish(cancelChannel(prefix), JSON.stringify(request));
}

/** Parses a message of the channel; undefined for anything else (it is ignored). */
export function parseCancelRequest(message: string): CancelRequest | undefined {
  try {
    const value = JSON.parse(message) as Partial<CancelRequest>;
    return typeof value.queue === "string" && typeof value.jobId === "string" ? { queue: value.queue, jobId: value.jobId } : undefined;
  } catch {
    return undefined;
  }
}
