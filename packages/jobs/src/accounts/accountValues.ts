import type { BatchAccount } from "@fleet/db/sql/accountBatches";

/**
 * The values a command template may use for an account. They are data, never command text:
 * renderCommand shell-quotes each into its {placeholder}. Attributes of the consent record
 * come as attr_<key>.
 */
export function accountValues(account: Pick<BatchAccount, "id" | "externalId" | "email" | "name" | "attributes">, batch: { id: number; runDate: string }, extra: { server?: string; group?: string } = {}): Record<string, string> {
  const values: Record<string, string> = {
    accountId: String(account.id),
    externalId: account.externalId,
    email: account.email,
    name: account.name,
    batchId: String(batch.id),
    runDate: batch.runDate,
    server: extra.server ?? "",
    group: extra.group ?? "",
  };
  for (const [k, v] of Object.entries(account.attributes ?? {})) if (typeof v === "string") values[`attr_${k}`] = v;
  return values;
}
