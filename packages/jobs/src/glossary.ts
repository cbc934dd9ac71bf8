/**
 * Glossary of the jobs package (the words the processors and their docs use).
 *
 * - **source file**: a row of `source_files`, the inventory of what is to be migrated; its
 *   `uri` is a key inside the source storage.
 * - **range**: a contiguous slice `[min_id, max_id]` of source file ids (BATCH_SIZE files),
 *   the unit of work of one `migrate-range` job. Ranges tile the id space without gaps.
 * - **claim**: the conditional UPDATE that makes one worker the owner of a range
 *   (PENDING → PROCESSING). Two workers racing for a range: exactly one wins.
 * - **owner**: `<worker id>/<job id>` written on a claimed range; only the owner can
 *   heartbeat, release or complete it.
 * - **heartbeat**: the owner refreshing `heartbeat_at` while it works. A PROCESSING range
 *   whose heartbeat is older than RANGE_STALE_AFTER is presumed orphaned: another claim may
 *   take it over, and recover-stuck puts it back to PENDING.
 * - **outcome**: the recorded result of one file (SUCCESS with new uri, size and sha256; or
 *   FAIL with an error category and message), written in bulk per chunk.
 * - **window**: a run window ("maintenance window") such as weeknights and weekends; a job
 *   taken outside it is delayed to the next opening, using no attempt.
 * - **attempt**: one run of a BullMQ job. Retryable errors use the next attempt after the
 *   backoff; permanent errors end the job at once. Window delays and shutdown hand-backs do
 *   not count.
 * - **retry** (of a file): retry-failed copying a FAIL file again; `retry_count` counts
 *   these, up to RETRY_MAX.
 * - **category**: the stable error class stored with a failure (`not-found`, `network`, …;
 *   see @fleet/core/errors); it decides whether a retry can help.
 * - **link**: a source storage → destination storage pair, named by both labels
 *   (`local:/data → s3://archive/x/`), as metrics and status show it.
 * - **link fault**: a failure of the link or of a storage as a whole (network, timeout,
 *   throttled, unavailable, no-space, storage-unavailable), never the file's own fault.
 * - **breaker**: a link's fleet-wide switch: a burst of link faults opens it and the link's work
 *   pauses (jobs delayed, files pending) until a **probe** — a cheap real check of both storages —
 *   succeeds and closes it.
 * - **source version**: what a read saw of a source object (size, mtime, or S3 ETag), recorded
 *   with its outcome; a source that changes while it is read fails `source-changed`.
 * - **reconcile**: re-deriving BullMQ jobs from Postgres: a range that is not COMPLETE and
 *   has no live job gets one again (Redis restarted empty, job removed by hand).
 * - **package**: with TRANSFER_MODE=packaged, some pending files of one range shipped as one
 *   tar plus a JSON manifest (`.fleet-packages/range-<id>/part-<first>-<last>.*`); its files'
 *   outcomes are written only once the package is verified. `unpack` restores it.
 * - **member**: one file inside a package (a tar entry named by the file's source key, listed
 *   in the manifest with size, sha256 and file id).
 * - **version** (of a file): a source_files row. A re-scan that finds a file changed adds a new
 *   row (new id → new range) and points the old one at it (`superseded_by`); **vanished**: a
 *   current row whose file a re-scan did not find (`vanished_at`).
 * - **killed**: a file an operator gave up (`fleet migrate kill`), or the failed outcome of a
 *   superseded version: never copied, never retried.
 * - **blocker**: a reason migration work is held (queue paused, window closed, breaker open);
 *   with one, every view says so and shows no ETA (status/blockers.ts).
 * - **account**: a row of `migration_queue`, from the consent API (account migrations).
 * - **batch**: the accounts of one night (`migration_batch`, one per run date).
 * - **assignment**: which server does an account's steps of one role in a batch.
 * - **step**: one command of the site's workflow (export, migrate, directory-sync…), run per
 *   account on its assigned server, with a completion check and a retry policy.
 * - **outbox**: the `notification` table: messages are rows first and sent afterwards, so none
 *   is lost when SMTP is down.
 */
export const GLOSSARY_TERMS = ["source file", "range", "claim", "owner", "heartbeat", "outcome", "window", "attempt", "retry", "category", "link", "link fault", "breaker", "source version", "reconcile", "package", "member", "account", "batch", "assignment", "step", "outbox"] as const;
