import { describe } from "@fleet/core/classifyError";
import { runRemoteCommand } from "@fleet/remote/remoteCommand";
import type { RemoteCommandResult } from "@fleet/remote/remoteCommand";
import type { RegisteredServer } from "../remote/serversFile";
import { stepErrorPatterns } from "./workflowFile";
import type { WorkflowStep } from "./workflowFile";

/** Output kept per stream in migration_log and account_step (the command's own bound is larger). */
const SUMMARY_CHARS = 2_000;

/**
 * Runs one command of a step (its command, status check or cancel) on a server, classified by
 * the step's error patterns in front of the server's. Values reach the remote shell only as
 * quoted words (renderCommand, the same renderer every remote command uses).
 */
export function runStepCommand(step: WorkflowStep, server: RegisteredServer, template: string, values: Record<string, string>, timeoutMs: number, signal: AbortSignal, label = step.name): Promise<RemoteCommandResult> {
  return runRemoteCommand(server.target, { template, values }, { timeoutMs, env: { ...server.env }, errorPatterns: stepErrorPatterns(step, server.errorPatterns), maxOutputBytes: 64 * 1024, label, signal });
}

/** What a status check's output says: done, failed, or not yet. */
export function readCheck(step: WorkflowStep, result: RemoteCommandResult): "done" | "failed" | "running" {
  const text = `${result.stdout}\n${result.stderr}`;
  if (!step.check) return "done";
  if (step.check.failed.test(text)) return "failed";
  if (step.check.done.test(text)) return "done";
  return "running";
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

export function summary(r: RemoteCommandResult): string {
  const out = [r.stdout && `stdout: ${tail(r.stdout, SUMMARY_CHARS / 2)}`, r.stderr && `stderr: ${tail(r.stderr, SUMMARY_CHARS / 2)}`].filter(Boolean).join("\n");
  return r.truncated ? `${out}\n(output truncated)` : out;
}

export function tail(s: string, n: number): string {
  const t = s.trimEnd();
  return t.length > n ? `…${t.slice(-n)}` : t;
}
