import { PermanentError } from "@fleet/core/errors";
import { validateKey } from "./keys";

const PLACEHOLDER = /\{([A-Za-z][A-Za-z0-9_]*)\}/g;

/**
 * Renders a key layout such as `{owner}/{year}/{path}` from one file's fields. Pure and
 * predictable: every `{name}` is replaced by its field verbatim ("/" in a value makes
 * segments), empty segments vanish (an empty field leaves no "//" or leading "/"), and the
 * result must then pass validateKey — a value with "..", control characters or too many bytes
 * makes the key invalid (PermanentError "invalid-key"); it is never silently altered. A
 * template naming a field that is not given, or with a stray brace, is PermanentError
 * "bad-config".
 */
export function renderKey(template: string, fields: Readonly<Record<string, string>>): string {
  let rendered = "";
  let from = 0;
  for (const match of template.matchAll(PLACEHOLDER)) {
    rendered += literal(template, template.slice(from, match.index)) + field(template, fields, match[1] ?? "");
    from = match.index + match[0].length;
  }
  rendered += literal(template, template.slice(from));
  return validateKey(rendered.split("/").filter((segment) => segment !== "").join("/"));
}

/** The placeholders a template uses, in order; PermanentError("bad-config") for a stray brace. */
export function templateFields(template: string): string[] {
  const names: string[] = [];
  let from = 0;
  for (const match of template.matchAll(PLACEHOLDER)) {
    literal(template, template.slice(from, match.index));
    names.push(match[1] ?? "");
    from = match.index + match[0].length;
  }
  literal(template, template.slice(from));
  return names;
}

/**
 * A destination key layout checked once, at config time: only `known` fields, no stray brace,
 * at least one placeholder (a constant key would send every file to one object).
 */
export class KeyTemplate {
  readonly template: string;
  /** The template is `{path}`: the destination key is the source key, nothing to render. */
  readonly isIdentity: boolean;
  /**
   * Two files can never get one key: the template holds `{path}` or `{id}`, or `{dir}` with
   * `{name}`. `{owner}/{name}` is not: two folders' report.pdf meet at one key.
   */
  readonly unique: boolean;

  constructor(template: string, known: readonly string[]) {
    const used = templateFields(template);
    const unknown = used.filter((name) => !known.includes(name));
    if (unknown.length > 0) {
      throw new PermanentError("bad-config", `key template ${JSON.stringify(template)} uses ${unknown.map((n) => `{${n}}`).join(", ")}, not one of: ${known.map((n) => `{${n}}`).join(", ")}`);
    }
    if (!used.includes("path") && !used.includes("id") && !used.includes("name")) {
      throw new PermanentError("bad-config", `key template ${JSON.stringify(template)} must contain {path}, {name} or {id}, or every file would go to the same few keys`);
    }
    this.template = template;
    this.isIdentity = template === "{path}";
    this.unique = used.includes("path") || used.includes("id") || (used.includes("dir") && used.includes("name"));
  }

  render(fields: Readonly<Record<string, string>>): string {
    return renderKey(this.template, fields);
  }

  /** The template as written (the config reference shows it as the default). */
  toString(): string {
    return this.template;
  }
}

function literal(template: string, text: string): string {
  if (/[{}]/.test(text)) throw new PermanentError("bad-config", `key template ${JSON.stringify(template)} has a brace that is not part of a {field}`);
  return text;
}

function field(template: string, fields: Readonly<Record<string, string>>, name: string): string {
  const value = Object.prototype.hasOwnProperty.call(fields, name) ? fields[name] : undefined;
  if (value === undefined) {
    throw new PermanentError("bad-config", `key template ${JSON.stringify(template)} uses {${name}}, which is not one of: ${Object.keys(fields).join(", ")}`);
  }
  return value;
}
