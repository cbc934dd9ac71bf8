import { FlowProducer } from "bullmq";
import type { Redis } from "ioredis";
import { createTransport } from "nodemailer";
import type { Transporter } from "nodemailer";
import { PermanentError } from "@fleet/core/errors";
import type { AccountSettings } from "./accountSettings";
import type { Workflow } from "./workflowFile";

/**
 * What the account jobs need besides the shared deps: their settings, the site's workflow
 * (loaded and checked at startup, absent when ACCOUNTS_WORKFLOW_FILE is empty), a flow
 * producer for batch runs, and the Redis/prefix that cancel requests are published on.
 * Nothing connects until used.
 */
export interface AccountServices {
  settings: AccountSettings;
  /** The workflow in force now (re-read when ACCOUNTS_WORKFLOW_FILE changes; see configFiles.ts). */
  readonly workflow: Workflow | undefined;
  /** The workflow, or a bad-config error naming the variable to set. */
  requireWorkflow(): Workflow;
  flows(): FlowProducer;
  /** A fresh SMTP transport; the caller closes it (one per send round, no idle connections). */
  openMailer(): Transporter;
  redis: Redis;
  prefix: string;
  close(): Promise<void>;
}

export function createAccountServices(settings: AccountSettings, workflowSource: Workflow | undefined | (() => Workflow | undefined), redis: Redis, prefix: string): AccountServices {
  let flowProducer: FlowProducer | undefined;
  const current = typeof workflowSource === "function" ? workflowSource : () => workflowSource;
  return {
    settings,
    get workflow() {
      return current();
    },
    redis,
    prefix,
    requireWorkflow() {
      const workflow = current();
      if (!workflow) throw new PermanentError("bad-config", "account migrations need ACCOUNTS_WORKFLOW_FILE (servers, steps, templates): it is not set");
      return workflow;
    },
    flows() {
      flowProducer ??= new FlowProducer({ connection: redis, prefix });
      return flowProducer;
    },
    openMailer() {
      const { smtp } = settings;
      return createTransport({
        host: smtp.host,
        port: smtp.port,
        secure: smtp.port === 465,
        // With credentials, STARTTLS is required on the other ports: nodemailer otherwise sends
        // AUTH in clear text to a server that does not offer it (or whose offer was stripped on
        // the way), password included (found by a security review).
        ...(smtp.user ? { auth: { user: smtp.user, pass: smtp.password }, requireTLS: smtp.port !== 465 } : {}),
        connectionTimeout: smtp.timeoutMs,
        greetingTimeout: smtp.timeoutMs,
        socketTimeout: smtp.timeoutMs,
      });
    },
    async close() {
      await flowProducer?.close();
    },
  };
}
