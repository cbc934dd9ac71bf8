import { createHash } from "node:crypto";
import { z } from "zod";
import { parsePasswordHash } from "./passwords";
import type { PasswordHash } from "./passwords";
import { JOB_NAMES } from "@fleet/jobs/contracts";
import { BASE_SCOPES, parseScopes } from "./tokenScopes";
import type { TokenScopes } from "./tokenScopes";

/** `viewer` sees everything read-only; `operator` may also act (retry, clean, promote, pause). */
export const ROLES = ["viewer", "operator"] as const;
export type Role = (typeof ROLES)[number];

export interface DashboardUser {
  name: string;
  role: Role;
  password: PasswordHash;
  /** Digest of the role and password hash: sessions remember it and end when it changes. */
  fingerprint: string;
}

/** An API caller: a name for logs and the history, its scopes, and the token's bytes (compared timing-safe). */
export interface ApiToken {
  name: string;
  scopes: TokenScopes;
  token: Buffer;
}

const NAME = /^[A-Za-z0-9_.@-]{1,64}$/;

/** `alice:operator:scrypt.…,bob:viewer:scrypt.…` → users; issues name the entry, never its hash. */
export const usersField = z
  .string({ message: "required: at least one user as name:role:hash (hash: node apps/dashboard/dist/hashPassword.js)" })
  .transform((value, ctx) => {
    const users = new Map<string, DashboardUser>();
    const entries = value.split(",").map((s) => s.trim()).filter(Boolean);
    entries.forEach((entry, i) => {
      const [name = "", role = "", hash = "", ...rest] = entry.split(":");
      const where = NAME.test(name) ? `user "${name}"` : `entry ${i + 1}`;
      if (!NAME.test(name) || rest.length > 0) ctx.addIssue({ code: "custom", message: `${where}: expected name:role:hash (name: letters, digits, _.@-)` });
      else if (!(ROLES as readonly string[]).includes(role)) ctx.addIssue({ code: "custom", message: `${where}: role must be viewer or operator` });
      else if (users.has(name)) ctx.addIssue({ code: "custom", message: `${where} appears twice` });
      else {
        const password = parsePasswordHash(hash);
        if (!password) ctx.addIssue({ code: "custom", message: `${where}: not a scrypt hash from node apps/dashboard/dist/hashPassword.js` });
        else users.set(name, { name, role: role as Role, password, fingerprint: createHash("sha256").update(`${role}\n${hash}`).digest("hex").slice(0, 32) });
      }
    });
    if (entries.length === 0) ctx.addIssue({ code: "custom", message: "at least one user is required (name:role:hash)" });
    return users as ReadonlyMap<string, DashboardUser>;
  });

/**
 * Token entries `name:scopes:token`, scopes joined with `+` (see tokenScopes.ts), e.g.
 * `prometheus:metrics:<token>` or `ci:read+submit:unpack:<token>`. Tokens have at least 32
 * characters and no `:` or spaces (`openssl rand -hex 32`). Issues name the entry, never a token.
 */
export function parseApiTokens(entries: readonly string[], where: string): { tokens: ApiToken[]; problems: string[] } {
  const tokens: ApiToken[] = [];
  const problems: string[] = [];
  const jobs = new Set<string>(JOB_NAMES);
  entries.forEach((entry, i) => {
    const first = entry.indexOf(":");
    const last = entry.lastIndexOf(":");
    const name = entry.slice(0, Math.max(first, 0));
    const label = NAME.test(name) ? `token "${name}"` : `${where} entry ${i + 1}`;
    if (first < 1 || last === first || !NAME.test(name)) {
      problems.push(`${label}: expected name:scopes:token, scopes joined with + (${BASE_SCOPES.join(", ")}, submit:<job>, site:<name>), e.g. prometheus:metrics:<token>`);
      return;
    }
    const token = entry.slice(last + 1);
    const { scopes, problems: scopeProblems } = parseScopes(entry.slice(first + 1, last), jobs);
    if (token.length < 32 || /\s/.test(token)) problems.push(`${label}: at least 32 characters without spaces or ':' (openssl rand -hex 32)`);
    else if (scopeProblems.length > 0) problems.push(...scopeProblems.map((p) => `${label}: ${p}`));
    else if (tokens.some((t) => t.name === name)) problems.push(`${label} appears twice`);
    else tokens.push({ name, scopes, token: Buffer.from(token) });
  });
  return { tokens, problems };
}

/**
 * DASHBOARD_API_TOKENS: entries separated by commas or newlines, blank lines and `#` comment
 * lines ignored, so DASHBOARD_API_TOKENS_FILE can hold one entry a line (see {@link parseApiTokens}).
 */
export const apiTokensField = z
  .string()
  .optional()
  .transform((value, ctx) => {
    // Unset stays undefined (no tokens: the API answers 401 to everyone), so docs show no default.
    if (value === undefined) return undefined;
    const entries = value
      .split(/\r?\n/)
      .filter((line) => !line.trim().startsWith("#"))
      .flatMap((line) => line.split(","))
      .map((s) => s.trim())
      .filter(Boolean);
    const { tokens, problems } = parseApiTokens(entries, "DASHBOARD_API_TOKENS");
    for (const message of problems) ctx.addIssue({ code: "custom", message });
    return tokens as readonly ApiToken[];
  });

