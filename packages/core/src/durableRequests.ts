/**
 * Requests of durable job kinds (a contract's `durable`): kept in PostgreSQL from before their
 * job reaches Redis until they end, so that a Redis that loses the job does not lose the request
 * (the recovery watch queues it again under its id). JobClient writes them through this store;
 * the database package implements it (packages/db/src/sql/jobRequests.ts).
 */
export interface DurableRequest {
  /** The BullMQ job id the request runs under (and is queued again under). */
  id: string;
  name: string;
  queue: string;
  /** The payload as validated. */
  data: unknown;
  /** A delayed submission's time to run; null: at once. */
  runAt: Date | null;
  priority: number | null;
  /**
   * The BullMQ timestamp its job is given (JobClient sets it): what tells this submission's
   * history row from an older job's under the same id. Undefined: not known (matched by id).
   */
  jobCreatedAt?: Date;
  /** Who submitted it and for which site, if anyone: a replay records them (the history may not have). */
  submittedBy?: string | null;
  site?: string | null;
}

export interface DurableRequestStore {
  /**
   * Keeps the requests (a request already kept under its id stays as it is); the ids this call
   * kept, so that a failed add forgets only those, never a request kept before (a replay's).
   */
  keep(requests: readonly DurableRequest[]): Promise<string[]>;
  /** Forgets requests (ended, or never queued). */
  forget(ids: readonly string[]): Promise<void>;
}
