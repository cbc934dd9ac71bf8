import { secretNames } from "@fleet/core/secretFiles";
import { dashboardSchema } from "../../dashboard/src/config";
import { schedulerSchema } from "../../scheduler/src/config";
import { workerSchema } from "../../worker/src/config";
import { cliSchema } from "../src/config";

/**
 * Every secret variable of every app accepts NAME_FILE and is redacted in config errors. The
 * marker is easy to lose (a `.default()` after `secret()` drops it), so the lists are pinned.
 */
const STORAGE = ["SOURCE", "DESTINATION"].flatMap((role) =>
  ["S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_SESSION_TOKEN", "SSH_KEY_PASSPHRASE", "SSH_PASSWORD"].map((v) => `${role}_${v}`),
);
const CONNECTIONS = ["REDIS_URL", "DATABASE_URL"];
const ACCOUNTS = ["ACCOUNTS_CONSENT_TOKEN", "SMTP_PASSWORD"];

describe("secret variables", () => {
  it.each([
    ["worker", workerSchema, [...CONNECTIONS, ...STORAGE, ...ACCOUNTS, "METRICS_TOKEN", "WEBHOOK_SECRET"]],
    ["cli", cliSchema, [...CONNECTIONS, ...STORAGE, ...ACCOUNTS]],
    ["scheduler", schedulerSchema, [...CONNECTIONS, "METRICS_TOKEN", "ALERT_WEBHOOK_URL"]],
    ["dashboard", dashboardSchema, [...CONNECTIONS, "DASHBOARD_USERS", "DASHBOARD_SESSION_SECRET", "DASHBOARD_API_TOKENS"]],
  ] as const)("%s: every secret is marked (NAME_FILE works for it)", (_app, schema, expected) => {
    expect(secretNames(schema).sort()).toEqual([...expected].sort());
  });
});
