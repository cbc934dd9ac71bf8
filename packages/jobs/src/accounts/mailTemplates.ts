import type { MailTemplate } from "./workflowFile";

export interface RenderedMail {
  subject: string;
  text: string;
  html?: string;
}

const PLACEHOLDER = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/**
 * Fills `{field}` placeholders from the notification's data. Values are escaped for HTML in
 * the html part and have line breaks removed in the subject (no header injection); an
 * unknown placeholder stays visible as `{field}` rather than silently becoming empty.
 */
export function renderMail(template: MailTemplate, data: Record<string, unknown>): RenderedMail {
  const value = (name: string, raw: string): string => (Object.prototype.hasOwnProperty.call(data, name) && data[name] !== null && data[name] !== undefined ? String(data[name]) : raw);
  const fill = (text: string, escape: (s: string) => string) => text.replace(PLACEHOLDER, (raw, name: string) => escape(value(name, raw)));
  return {
    subject: fill(template.subject, (s) => s.replace(/[\r\n]+/g, " ")),
    text: fill(template.text, (s) => s),
    ...(template.html ? { html: fill(template.html, escapeHtml) } : {}),
  };
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}
