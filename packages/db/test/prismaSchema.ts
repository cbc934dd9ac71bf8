/**
 * Just enough of a schema.prisma reader for schema.test.ts. The generated client's runtime
 * data model names models, fields and columns but carries no optionality, native types or enum
 * values, so the declaration is read from the schema itself; the test checks the result
 * against the generated client, so a field this reader misses fails the test instead of
 * going unchecked.
 */

export interface FieldDecl {
  name: string;
  /** Prisma type: String, BigInt, DateTime, an enum name... */
  type: string;
  optional: boolean;
  column: string;
  /** `@db.X(...)` without the `@db.` prefix, e.g. `Timestamptz(3)`. */
  nativeType: string | undefined;
  isId: boolean;
  isUnique: boolean;
  hasDefault: boolean;
}

export interface IndexDecl {
  name: string;
  columns: string[];
  unique: boolean;
}

export interface ModelDecl {
  name: string;
  table: string;
  fields: FieldDecl[];
  /** Every index Prisma would create: primary key, @unique, @@unique, @@index. */
  indexes: IndexDecl[];
}

export interface EnumDecl {
  name: string;
  dbName: string;
  values: string[];
}

export interface SchemaDecl {
  models: ModelDecl[];
  enums: EnumDecl[];
}

export function parsePrismaSchema(text: string): SchemaDecl {
  // `//` and `///` comments; a `//` inside a string would need a real tokenizer, none exists here.
  const source = text.replace(/(^|\s)\/\/.*$/gm, "$1");
  const blocks = [...source.matchAll(/^\s*(model|enum)\s+(\w+)\s*\{([^}]*)\}/gm)];
  const enums = blocks.filter((b) => b[1] === "enum").map((b) => parseEnum(b[2]!, b[3]!));
  const modelNames = new Set(blocks.filter((b) => b[1] === "model").map((b) => b[2]!));
  const models = blocks.filter((b) => b[1] === "model").map((b) => parseModel(b[2]!, b[3]!, modelNames));
  return { models, enums };
}

function lines(body: string): string[] {
  return body.split("\n").map((l) => l.trim()).filter(Boolean);
}

function mapArg(line: string): string | undefined {
  return /@@?map\("([^"]+)"\)/.exec(line)?.[1];
}

function parseEnum(name: string, body: string): EnumDecl {
  const values: string[] = [];
  let dbName = name;
  for (const line of lines(body)) {
    if (line.startsWith("@@")) dbName = mapArg(line) ?? dbName;
    else values.push(line.split(/\s+/)[0]!);
  }
  return { name, dbName, values };
}

function parseModel(name: string, body: string, modelNames: Set<string>): ModelDecl {
  const fields: FieldDecl[] = [];
  const blockAttributes: string[] = [];
  for (const line of lines(body)) {
    if (line.startsWith("@@")) {
      blockAttributes.push(line);
      continue;
    }
    const m = /^(\w+)\s+(\w+)(\[\])?(\?)?\s*(.*)$/.exec(line);
    if (!m) throw new Error(`cannot read field line of ${name}: ${line}`);
    const [, fieldName, type, list, optional, attrs] = m as unknown as [string, string, string, string | undefined, string | undefined, string];
    // Relation fields are no columns; lists would be arrays, which this schema does not use.
    if (modelNames.has(type)) continue;
    if (list) throw new Error(`${name}.${fieldName}: list fields are not handled by this reader`);
    fields.push({
      name: fieldName,
      type,
      optional: optional === "?",
      column: mapArg(attrs) ?? fieldName,
      nativeType: /@db\.(\w+(?:\([^)]*\))?)/.exec(attrs)?.[1],
      isId: /@id\b/.test(attrs),
      isUnique: /@unique\b/.test(attrs),
      hasDefault: /@default\(/.test(attrs),
    });
  }
  let table = name;
  for (const attr of blockAttributes) if (attr.startsWith("@@map(")) table = mapArg(attr) ?? table;
  const column = (fieldName: string) => {
    const field = fields.find((f) => f.name === fieldName);
    if (!field) throw new Error(`${name}: index on unknown field ${fieldName}`);
    return field.column;
  };

  // Prisma's default constraint names: <table>_pkey, <table>_<cols>_key, <table>_<cols>_idx.
  const indexes: IndexDecl[] = [];
  for (const f of fields) {
    if (f.isId) indexes.push({ name: `${table}_pkey`, columns: [f.column], unique: true });
    if (f.isUnique) indexes.push({ name: `${table}_${f.column}_key`, columns: [f.column], unique: true });
  }
  for (const attr of blockAttributes) {
    const m = /^@@(id|unique|index)\(\[([^\]]*)\](.*)\)$/.exec(attr);
    if (!m) continue;
    const columns = m[2]!.split(",").map((s) => column(s.trim()));
    const explicit = /map:\s*"([^"]+)"/.exec(m[3]!)?.[1];
    const suffix = m[1] === "id" ? "pkey" : m[1] === "unique" ? "key" : "idx";
    const fallback = m[1] === "id" ? `${table}_pkey` : `${table}_${columns.join("_")}_${suffix}`;
    indexes.push({ name: explicit ?? fallback, columns, unique: m[1] !== "index" });
  }
  return { name, table, fields, indexes };
}
