import type { Queue } from "bullmq";
import type { Redis } from "ioredis";

/**
 * Durable requests whose job succeeded while their kept copy (job_requests) could not be
 * forgotten — PostgreSQL down when the handler returned. Noted in Redis, beside the job's
 * queue, until the recovery pass forgets them: BullMQ prunes a completed job
 * (KEEP_COMPLETED), and the history's record of the completion is buffered in the worker's
 * memory (gone with a worker stopped or killed during the outage), so without this note a
 * request whose job was pruned before a pass saw it completed was taken for a loss and run
 * again. Redis, not the worker's disk: the note must outlive the worker (a container replaced
 * meanwhile), and Redis is where the job's completion goes at the same moment; a Redis that
 * loses the note loses the job with it, as before this.
 *
 * A sorted set per queue, the note's time as score (Redis's clock, as the replay reads it).
 */
const KEY = "ended-requests";

/** Notes requests ended (their job succeeded) that PostgreSQL could not forget. */
export async function noteRequestsEnded(queue: Queue, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  const client = await redisOf(queue);
  const [seconds, micros] = await client.time();
  const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  await client.zadd(queue.toKey(KEY), ...ids.flatMap((id) => [now, id]));
}

/** The requests noted ended, with when (ms, Redis's clock). */
export async function requestsNotedEnded(queue: Queue): Promise<Map<string, number>> {
  const client = await redisOf(queue);
  const flat = await client.zrange(queue.toKey(KEY), 0, -1, "WITHSCORES");
  const noted = new Map<string, number>();
  for (let i = 0; i + 1 < flat.length; i += 2) noted.set(flat[i]!, Number(flat[i + 1]));
  return noted;
}

/**
 * Drops notes: of requests forgotten since, or run again (a board retry keeps the request
 * anew, and its new run must not be taken for ended by the old note).
 */
export async function clearEndedNotes(queue: Queue, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  const client = await redisOf(queue);
  await client.zrem(queue.toKey(KEY), ...ids);
}

/** The queue's own connection (BullMQ's backend client is ioredis). */
async function redisOf(queue: Queue): Promise<Redis> {
  return (await queue.getBackend().client) as unknown as Redis;
}
