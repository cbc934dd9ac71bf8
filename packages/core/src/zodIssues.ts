import type { z } from "zod";

/** `rangeId: expected number, received string; files: too small` — for failure reasons and 400s. */
export function formatZodIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues.map((i) => `${i.path.length ? i.path.join(".") : "(payload)"}: ${i.message}`).join("; ");
}
