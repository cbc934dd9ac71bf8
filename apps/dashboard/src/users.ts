import { z } from "zod";
import { parsePasswordHash } from "./passwords";
import type { PasswordHash } from "./passwords";

/** `viewer` sees everything read-only; `operator` may also act (retry, clean, promote, pause). */
export const ROLES = ["viewer", "operator"] as const;
export type Role = (typeof ROLES)[number];

export interface DashboardUser {
  name: string;
  role: Role;
  password: PasswordHash;
}

/** An API caller: a name for logs, and the token's bytes (compared timing-safe). */
export interface ApiToken {
  name: string;
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
        else users.set(name, { name, role: role as Role, password });
      }
    });
    if (entries.length === 0) ctx.addIssue({ code: "custom", message: "at least one user is required (name:role:hash)" });
    return users as ReadonlyMap<string, DashboardUser>;
  });

/** `ci:<token>,site-a:<token>`; tokens of at least 32 characters (e.g. `openssl rand -hex 32`). */
export const apiTokensField = z
  .string()
  .optional()
  .transform((value, ctx) => {
    // Unset stays undefined (no tokens: the API answers 401 to everyone), so docs show no default.
    if (value === undefined) return undefined;
    const tokens: ApiToken[] = [];
    for (const [i, entry] of value.split(",").map((s) => s.trim()).filter(Boolean).entries()) {
      const colon = entry.indexOf(":");
      const name = entry.slice(0, colon);
      const token = entry.slice(colon + 1);
      if (colon < 1 || !NAME.test(name)) ctx.addIssue({ code: "custom", message: `entry ${i + 1}: expected name:token` });
      else if (token.length < 32 || /\s/.test(token)) ctx.addIssue({ code: "custom", message: `token "${name}": at least 32 characters without spaces (openssl rand -hex 32)` });
      else if (tokens.some((t) => t.name === name)) ctx.addIssue({ code: "custom", message: `token "${name}" appears twice` });
      else tokens.push({ name, token: Buffer.from(token) });
    }
    return tokens as readonly ApiToken[];
  });
