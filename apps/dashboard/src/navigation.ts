import type { Principal } from "./auth";
import { html } from "./html";
import type { SafeHtml } from "./html";

/** The header links a signed-in user sees. */
export function navigation(principal: Principal | undefined): SafeHtml {
  if (!principal) return html``;
  const queues = principal.role === "operator" ? "/queues/" : "/queues/readonly/";
  return html`<a href="/progress">Progress</a><a href="/failures">Failures</a><a href="/accounts">Accounts</a><a href="/settings">Settings</a><a href="${queues}">Queues</a><span class="muted">${principal.user} (${principal.role})</span>${
    principal.kind === "session" ? html`<a href="/logout">Sign out</a>` : ""
  }`;
}
