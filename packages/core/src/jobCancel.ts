import type { Worker } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "./logger";

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

/**
 * Subscribes (on a duplicate of `connection`) to the fleet's cancel requests and aborts the
 * named job in whichever of `workers` runs it. Resolves to the subscriber once subscribed.
 */
export async function listenForCancels(connection: Redis, prefix: string, workers: readonly Worker[], log: Logger): Promise<Redis> {
  const subscriber = connection.duplicate();
  subscriber.on("error", (err) => log.debug({ err }, "cancel subscriber connection error"));
  subscriber.on("message", (_channel: string, message: string) => {
    const request = parseCancelRequest(message);
    if (!request) return;
    for (const worker of workers) {
      if (worker.name === request.queue && worker.cancelJob(request.jobId, CANCEL_REASON)) {
        log.warn({ queue: request.queue, jobId: request.jobId }, "job cancelled on request: aborting it");
      }
    }
  });
  await subscriber.subscribe(cancelChannel(prefix));
  return subscriber;
}
