import { PermanentError, RetryableError } from "@fleet/core/errors";
import type { FleetError } from "@fleet/core/errors";
import { classifyError, describe } from "@fleet/core/classifyError";
import { runRemoteCommand } from "@fleet/storage/remoteCommand";
import type { RemoteCommandResult } from "@fleet/storage/remoteCommand";
import type { RegisteredServer } from "../remote/serversFile";
import { sleep } from "./consentApi";
import { stepErrorPatterns } from "./workflowFile";
import type { WorkflowStep } from "./workflowFile";

/** Output kept per stream in migration_log (the command's own bound is larger). */
const SUMMARY_CHARS = 2_000;

export interface StepOutcome {
  exitCode: number | null;
  durationMs: number;
  /** Tail of stdout/stderr of the command (and of the last status check). */
  output: string;
  checks: number;
}

export interface StepRunOptions {
  signal: AbortSignal;
  /** Called before each status poll; throwing stops the step (e.g. the account was cancelled). */
  beforePoll?: () => Promise<void>;
}

/**
 * Runs one step's command on a server, then its completion check: without one the exit code
 * decides; with one, the status command is polled every `every` until its output matches the
 * done pattern (success) or the failed pattern (permanent failure), or `timeout` passes
 * (retryable timeout). Values reach the remote shell only as quoted words (renderCommand).
 */
export async function executeStep(step: WorkflowStep, server: RegisteredServer, values: Record<string, string>, options: StepRunOptions): Promise<StepOutcome> {
  const started = Date.now();
  const patterns = stepErrorPatterns(step, server.errorPatterns);
  const run = (template: string, timeoutMs: number): Promise<RemoteCommandResult> =>
    runRemoteCommand(server.target, { template, values }, { timeoutMs, env: { ...server.env }, errorPatterns: patterns, maxOutputBytes: 64 * 1024, label: step.name, signal: options.signal });
  const first = await run(step.command, step.timeoutMs);
  let output = summary(first);
  let checks = 0;
  if (step.check) {
    const check = step.check;
    const deadline = Date.now() + check.timeoutMs;
    for (;;) {
      await options.beforePoll?.();
      const status = await run(check.command, Math.min(step.timeoutMs, Math.max(1_000, deadline - Date.now())));
      checks++;
      output = summary(status);
      const text = `${status.stdout}\n${status.stderr}`;
      if (check.failed.test(text)) throw new PermanentError("invalid-payload", `${step.name}: status check reports failure: ${tail(text, 300)}`);
      if (check.done.test(text)) break;
      if (Date.now() + check.everyMs > deadline) throw new RetryableError("timeout", `${step.name}: not done after ${check.timeoutMs} ms of status checks (last: ${tail(text, 200)})`);
      await sleep(check.everyMs, options.signal);
    }
  }
  return { exitCode: first.exitCode, durationMs: Date.now() - started, output, checks };
}

/**
 * The step's retry policy around executeStep: permanent errors end it at once; retryable ones
 * wait the step's backoff and try again, up to `attempts`. Aborts are never retried.
 */
export async function executeWithRetries(
  step: WorkflowStep,
  server: RegisteredServer,
  values: Record<string, string>,
  options: StepRunOptions & { onRetry?: (attempt: number, error: FleetError, waitMs: number) => Promise<void> },
): Promise<StepOutcome & { attempts: number }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return { ...(await executeStep(step, server, values, options)), attempts: attempt };
    } catch (err) {
      const error = classifyError(err);
      if (options.signal.aborted || !error.retryable || attempt >= step.attempts) throw error;
      const waitMs = step.backoffMs[Math.min(attempt - 1, step.backoffMs.length - 1)] ?? 30_000;
      await options.onRetry?.(attempt, error, waitMs);
      await sleep(waitMs, options.signal);
    }
  }
}

/** The output a failed command left, for the log (from RemoteCommandFailure causes). */
export function failureOutput(err: unknown): string {
  let current: unknown = err;
  for (let i = 0; i < 4 && current; i++) {
    const result = (current as { result?: RemoteCommandResult }).result;
    if (result) return summary(result);
    current = (current as { cause?: unknown }).cause;
  }
  return describe(err).slice(0, SUMMARY_CHARS);
}

function summary(r: RemoteCommandResult): string {
  const out = [r.stdout && `stdout: ${tail(r.stdout, SUMMARY_CHARS / 2)}`, r.stderr && `stderr: ${tail(r.stderr, SUMMARY_CHARS / 2)}`].filter(Boolean).join("\n");
  return r.truncated ? `${out}\n(output truncated)` : out;
}

function tail(s: string, n: number): string {
  const t = s.trimEnd();
  return t.length > n ? `…${t.slice(-n)}` : t;
}
