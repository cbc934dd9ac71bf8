import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { parseDuration } from "@fleet/core/backoff";
import { ConfigError } from "@fleet/core/errors";
import type { RemoteErrorPatterns } from "@fleet/remote/remoteErrors";
import { checkCommandTemplate } from "@fleet/remote/remoteShell";

/**
 * A site's account workflow (ACCOUNTS_WORKFLOW_FILE), checked once at startup:
 *
 *   servers:                 # migration servers; `ssh` names a server of SSH_SERVERS_FILE
 *     exp1: { ssh: exporter, role: export, capacity: 50 }
 *     mig1: { ssh: migrator, role: migration, capacity: 30, concurrency: 10 }
 *                            # capacity: accounts per night; concurrency: commands and polled
 *                            # migrations in progress at once on it (default: capacity)
 *   checks:                  # optional health command per role, run by probes and pre-flight
 *     migration: mig-health
 *   steps:                   # run in order for every account of a batch
 *     - name: export
 *       role: export
 *       command: mailbox-export --mailbox {email} --batch {batchId}
 *       timeout: 10m                       # of the command (default 5m)
 *       check:                             # optional; without it the exit code decides
 *         command: mailbox-export-status --mailbox {email}
 *         every: 30s
 *         done: "^COMPLETED"
 *         failed: "^FAILED"
 *         timeout: 4h
 *       retry: { attempts: 3, backoff: [30s, 5m] }
 *       errorPatterns: { permanent: ["mailbox not found"], retryable: ["server busy"] }
 *       cancel: mailbox-export-abort --mailbox {email}   # optional; run when an account is
 *                                            # cancelled after this step's command started
 *   groupUpdate:             # the 17:30 step: tonight's accounts into a directory group
 *     role: sync
 *     group: migrating-tonight
 *     command: add-group-member --group {group} --user {email}
 *     removeCommand: remove-group-member --group {group} --user {email}   # optional; on cancel
 *   templates:               # {field} placeholders; HTML-escaped in html
 *     pre-migration: { subject: …, text: …, html: … }
 *     postponed / cancelled: { subject: …, text: … }   # to the user
 *     operator-summary / operator-alert: { subject: …, text: … }
 *
 * Command templates are the administrator's; account fields only ever arrive as values,
 * shell-quoted into {placeholders} by renderCommand (never spliced as raw text).
 */

export interface WorkflowServer {
  name: string;
  /** The SSH_SERVERS_FILE server that holds its host, keys and host key. */
  ssh: string;
  role: string;
  capacity: number;
  /** Commands and polled migrations in progress at once on this server. */
  concurrency: number;
}

export interface StatusCheck {
  command: string;
  everyMs: number;
  done: RegExp;
  failed: RegExp;
  timeoutMs: number;
}

export interface WorkflowStep {
  name: string;
  role: string;
  command: string;
  timeoutMs: number;
  /** Absent: the command's exit code is the outcome. */
  check?: StatusCheck;
  attempts: number;
  backoffMs: readonly number[];
  errorPatterns: { permanent: RegExp[]; retryable: RegExp[] };
  /** Stops what `command` started on the server (run when the account is cancelled). */
  cancel?: string;
}

export interface MailTemplate {
  subject: string;
  text: string;
  html?: string;
}

export const TEMPLATE_NAMES = ["pre-migration", "postponed", "cancelled", "operator-summary", "operator-alert"] as const;
export type TemplateName = (typeof TEMPLATE_NAMES)[number];

export interface Workflow {
  servers: WorkflowServer[];
  steps: WorkflowStep[];
  groupUpdate?: { role: string; group: string; command: string; removeCommand?: string; timeoutMs: number };
  /** Health command per role (probes and pre-flight); a role without one is probed by connecting. */
  checks: Record<string, string>;
  templates: Record<TemplateName, MailTemplate>;
}

/** Values every step command may use; attributes of the consent record come as attr_<key>. */
export const ACCOUNT_PLACEHOLDERS = ["accountId", "externalId", "email", "name", "batchId", "runDate", "server", "group"] as const;

export const DEFAULT_TEMPLATES: Workflow["templates"] = {
  "pre-migration": {
    subject: "Your mailbox will be migrated tonight ({runDate})",
    text: "Hello {name},\n\nyour mailbox {email} will be migrated tonight ({runDate}). Please close your mail client before 18:00.\n",
    html: "<p>Hello {name},</p><p>your mailbox <b>{email}</b> will be migrated tonight ({runDate}). Please close your mail client before 18:00.</p>",
  },
  postponed: {
    subject: "Your mailbox migration has been postponed",
    text: "Hello {name},\n\nthe migration of your mailbox {email} planned for {runDate} has been postponed ({reason}). You will be told before the new date.\n",
  },
  cancelled: {
    subject: "Your mailbox migration has been cancelled",
    text: "Hello {name},\n\nthe migration of your mailbox {email} planned for {runDate} has been cancelled ({reason}). Your mailbox stays where it is.\n",
  },
  "operator-summary": {
    subject: "Account migration {runDate}: {done} done, {failed} failed, {cancelled} cancelled, {postponed} postponed",
    text: "Batch {batchId} of {runDate}: {planned} planned, {done} done, {failed} failed, {cancelled} cancelled, {postponed} postponed, {revoked} revoked.\n\n{failures}\n",
  },
  "operator-alert": {
    subject: "Fleet alert: {summary}",
    text: "{summary}\n\n{details}\n",
  },
};

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const duration = z.string().refine((s) => {
  try {
    parseDuration(s);
    return true;
  } catch {
    return false;
  }
}, "expected a duration like 30s, 5m, 2h");
const regex = z.string().min(1).refine((s) => {
  try {
    new RegExp(s);
    return true;
  } catch {
    return false;
  }
}, "not a valid regular expression");

const templateSchema = z.object({ subject: z.string().min(1), text: z.string().min(1), html: z.string().min(1).optional() }).strict();

const fileSchema = z
  .object({
    servers: z.record(
      z.string().regex(NAME),
      z.object({ ssh: z.string().regex(NAME), role: z.string().regex(NAME), capacity: z.number().int().min(0), concurrency: z.number().int().min(1).optional() }).strict(),
    ),
    checks: z.record(z.string().regex(NAME), z.string().min(1)).default({}),
    steps: z
      .array(
        z
          .object({
            name: z.string().regex(NAME),
            role: z.string().regex(NAME),
            command: z.string().min(1),
            timeout: duration.default("5m"),
            check: z.object({ command: z.string().min(1), every: duration.default("30s"), done: regex, failed: regex, timeout: duration.default("4h") }).strict().optional(),
            retry: z.object({ attempts: z.number().int().min(1).max(100).default(1), backoff: z.array(duration).default(["30s"]) }).strict().default({ attempts: 1, backoff: ["30s"] }),
            errorPatterns: z.object({ permanent: z.array(regex).default([]), retryable: z.array(regex).default([]) }).strict().default({ permanent: [], retryable: [] }),
            cancel: z.string().min(1).optional(),
          })
          .strict(),
      )
      .min(1),
    groupUpdate: z
      .object({ role: z.string().regex(NAME), group: z.string().min(1), command: z.string().min(1), removeCommand: z.string().min(1).optional(), timeout: duration.default("5m") })
      .strict()
      .optional(),
    templates: z.object(Object.fromEntries(TEMPLATE_NAMES.map((n) => [n, templateSchema.optional()])) as Record<TemplateName, z.ZodOptional<typeof templateSchema>>).strict().default({}),
  })
  .strict();

/** Reads and checks the workflow; every problem is listed in one ConfigError. */
export function loadWorkflowFile(path: string, sshServers?: ReadonlySet<string>, read: (file: string) => string = (file) => readFileSync(file, "utf8")): Workflow {
  const where = `ACCOUNTS_WORKFLOW_FILE ${path}`;
  let raw: unknown;
  try {
    raw = parseYaml(read(path));
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { linePos?: Array<{ line: number; col: number }> };
    // The yaml package's message names the line and column; a file error has only its code.
    if (e.linePos) throw new ConfigError([`${where}: is not valid YAML: ${e.message.split("\n")[0]}`]);
    throw new ConfigError([`${where}: cannot read it (${e.code ?? e.message.split("\n")[0]})`]);
  }
  return parseWorkflow(raw, where, sshServers);
}

export function parseWorkflow(raw: unknown, where: string, sshServers?: ReadonlySet<string>): Workflow {
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(parsed.error.issues.map((i) => `${where}: ${i.path.join(".") || "(file)"}: ${i.message}`));
  const f = parsed.data;
  const issues: string[] = [];
  const servers = Object.entries(f.servers).map(([name, s]) => ({ name, ...s }));
  const roles = new Set(servers.map((s) => s.role));
  for (const s of servers) {
    if (sshServers && !sshServers.has(s.ssh)) issues.push(`${where}: servers.${s.name}.ssh: "${s.ssh}" is not a server of SSH_SERVERS_FILE`);
  }
  // Placeholders are checked now with dummy values, so a typo fails at startup, not at 18:00.
  const known = new Set<string>(ACCOUNT_PLACEHOLDERS);
  const checkTemplate = (path: string, template: string) => {
    try {
      // Where each placeholder sits (quotes, backquotes, $(…), the program…): see commandTemplate.ts.
      for (const name of checkCommandTemplate(template)) {
        if (!known.has(name) && !name.startsWith("attr_")) issues.push(`${where}: ${path}: command template: no value for placeholder {${name}} (account fields: ${[...known].join(", ")}, attr_<name>)`);
      }
    } catch (err) {
      issues.push(`${where}: ${path}: ${(err as Error).message}`);
    }
  };
  const names = new Set<string>();
  f.steps.forEach((s, i) => {
    if (names.has(s.name)) issues.push(`${where}: steps.${i}.name: "${s.name}" is used twice`);
    names.add(s.name);
    if (!roles.has(s.role)) issues.push(`${where}: steps.${i}.role: no server has role "${s.role}" (roles: ${[...roles].join(", ") || "none"})`);
    checkTemplate(`steps.${i}.command`, s.command);
    if (s.check) checkTemplate(`steps.${i}.check.command`, s.check.command);
    if (s.cancel) checkTemplate(`steps.${i}.cancel`, s.cancel);
  });
  if (f.groupUpdate) {
    if (!roles.has(f.groupUpdate.role)) issues.push(`${where}: groupUpdate.role: no server has role "${f.groupUpdate.role}"`);
    checkTemplate("groupUpdate.command", f.groupUpdate.command);
    if (f.groupUpdate.removeCommand) checkTemplate("groupUpdate.removeCommand", f.groupUpdate.removeCommand);
  }
  for (const [role, command] of Object.entries(f.checks)) {
    if (!roles.has(role)) issues.push(`${where}: checks.${role}: no server has role "${role}"`);
    checkTemplate(`checks.${role}`, command);
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return {
    servers: servers.map((s) => ({ name: s.name, ssh: s.ssh, role: s.role, capacity: s.capacity, concurrency: s.concurrency ?? Math.max(1, s.capacity) })),
    checks: f.checks,
    steps: f.steps.map((s) => ({
      name: s.name,
      role: s.role,
      command: s.command,
      timeoutMs: parseDuration(s.timeout),
      ...(s.check
        ? { check: { command: s.check.command, everyMs: parseDuration(s.check.every), done: new RegExp(s.check.done, "m"), failed: new RegExp(s.check.failed, "m"), timeoutMs: parseDuration(s.check.timeout) } }
        : {}),
      attempts: s.retry.attempts,
      backoffMs: s.retry.backoff.map(parseDuration),
      errorPatterns: { permanent: s.errorPatterns.permanent.map((p) => new RegExp(p, "i")), retryable: s.errorPatterns.retryable.map((p) => new RegExp(p, "i")) },
      ...(s.cancel ? { cancel: s.cancel } : {}),
    })),
    ...(f.groupUpdate
      ? {
          groupUpdate: {
            role: f.groupUpdate.role,
            group: f.groupUpdate.group,
            command: f.groupUpdate.command,
            ...(f.groupUpdate.removeCommand ? { removeCommand: f.groupUpdate.removeCommand } : {}),
            timeoutMs: parseDuration(f.groupUpdate.timeout),
          },
        }
      : {}),
    templates: { ...DEFAULT_TEMPLATES, ...f.templates } as Workflow["templates"],
  };
}

/** A step's patterns in front of the server's (which already include the defaults). */
export function stepErrorPatterns(step: WorkflowStep, server: RemoteErrorPatterns): RemoteErrorPatterns {
  return { permanent: [...step.errorPatterns.permanent, ...server.permanent], retryable: [...step.errorPatterns.retryable, ...server.retryable] };
}
