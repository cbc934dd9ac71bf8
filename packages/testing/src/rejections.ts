/** What tests read of a Fleet error: its category, whether it is retried, its message. */
export interface Rejection {
  category: string;
  retryable: boolean;
  message: string;
  cause?: unknown;
}

/** The error a promise rejects with; fails the test when it resolves. */
export async function rejectionOf(promise: Promise<unknown>): Promise<Rejection> {
  try {
    await promise;
  } catch (err) {
    return err as Rejection;
  }
  throw new Error("expected a rejection");
}
