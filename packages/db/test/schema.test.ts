import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import pg from "pg";
import { migrateDatabase } from "@fleet/db/migrate";
import { createPrismaClient } from "@fleet/db/prismaClient";
import type { PrismaClient } from "@fleet/db/prismaClient";
import { unusedTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { Prisma } from "../src/generated/prisma/client";
import * as generatedEnums from "../src/generated/prisma/enums";
import { parsePrismaSchema } from "./prismaSchema";
import type { FieldDecl, ModelDecl } from "./prismaSchema";

/**
 * prisma/schema.prisma and the hand-written migration SQL must describe the same database:
 * Prisma's engine, which would diff them, cannot run here. Everything below is derived from the
 * schema, so a new model, field or enum is checked without touching this file.
 */

const schema = parsePrismaSchema(readFileSync(resolve(__dirname, "../../../prisma/schema.prisma"), "utf8"));
const enumsByName = new Map(schema.enums.map((e) => [e.name, e]));

/** How information_schema spells the column type Prisma creates for a field. */
function expectedColumnType(field: FieldDecl): string {
  const enumDecl = enumsByName.get(field.type);
  if (enumDecl) return enumDecl.dbName;
  const native = field.nativeType;
  switch (field.type) {
    case "String":
      if (native === undefined || native === "Text") return "text";
      if (native.startsWith("VarChar")) return `character varying${native.slice("VarChar".length)}`;
      if (native === "Uuid") return "uuid";
      break;
    case "Int":
      if (native === undefined || native === "Integer") return "integer";
      break;
    case "BigInt":
      if (native === undefined) return "bigint";
      break;
    case "Boolean":
      if (native === undefined) return "boolean";
      break;
    case "Json":
      if (native === undefined || native === "JsonB") return "jsonb";
      break;
    case "DateTime":
      if (native === undefined) return "timestamp without time zone(3)";
      if (native.startsWith("Timestamptz")) return `timestamp with time zone${native.slice("Timestamptz".length) || "(6)"}`;
      if (native.startsWith("Timestamp")) return `timestamp without time zone${native.slice("Timestamp".length) || "(6)"}`;
      break;
  }
  throw new Error(`schema.test.ts does not know the column type of ${field.type} ${native ?? ""} (${field.name}): add it to expectedColumnType`);
}

/** Distinct values per version, each at an edge its column type must hold exactly. */
function valueFor(field: FieldDecl, version: 1 | 2 | 3): unknown {
  const enumDecl = enumsByName.get(field.type);
  if (enumDecl) return enumDecl.values[version === 2 ? enumDecl.values.length - 1 : 0];
  switch (field.type) {
    case "String":
      return `${field.name} v${version} ✓ é 日本`;
    case "Int":
      return [2_147_483_647, -2_147_483_648, 7][version - 1];
    case "BigInt":
      // Above 2^53: a column or a path that goes through a JS number would lose the last digit.
      return 2n ** 53n + BigInt(version);
    case "Boolean":
      return version !== 2;
    case "Json":
      return version === 2 ? ["list", 2, null] : { nested: { values: [1, "two", null, true] }, text: "✓" };
    case "DateTime":
      // Milliseconds: Timestamptz(3) keeps them, a coarser column would not.
      return new Date(["2031-02-03T04:05:06.789Z", "1999-12-31T23:59:59.001Z", "2024-02-29T12:00:00.500Z"][version - 1]!);
  }
  throw new Error(`schema.test.ts has no test value for ${field.type} (${field.name}): add it to valueFor`);
}

function rowOf(model: ModelDecl, version: 1 | 2 | 3, fields: FieldDecl[] = model.fields): Record<string, unknown> {
  return Object.fromEntries(fields.map((f) => [f.name, valueFor(f, version)]));
}

/** The delegate methods the round trip uses, whatever the model. */
interface CrudDelegate {
  create(args: { data: Record<string, unknown> }): Promise<Record<string, unknown>>;
  update(args: { where: Record<string, unknown>; data: Record<string, unknown> }): Promise<Record<string, unknown>>;
  findUniqueOrThrow(args: { where: Record<string, unknown> }): Promise<Record<string, unknown>>;
}

function delegateOf(prisma: PrismaClient, model: ModelDecl): CrudDelegate {
  const key = model.name[0]!.toLowerCase() + model.name.slice(1);
  return (prisma as unknown as Record<string, CrudDelegate>)[key]!;
}

/** The fields of a model's primary key: one @id field, or the fields of its @@id([...]). */
function idFieldsOf(model: ModelDecl): FieldDecl[] {
  const ids = model.fields.filter((f) => f.isId);
  if (ids.length > 0) return ids;
  const pkey = model.indexes.find((i) => i.name === `${model.table}_pkey`);
  if (!pkey) throw new Error(`${model.name}: no primary key`);
  return pkey.columns.map((c) => model.fields.find((f) => f.column === c)!);
}

/** Prisma's `where` for the row whose key fields have the values of `n` (a compound key is `a_b_c: {…}`). */
function whereOf(ids: readonly FieldDecl[], n: 1 | 2 | 3): Record<string, unknown> {
  if (ids.length === 1) return { [ids[0]!.name]: valueFor(ids[0]!, n) };
  return { [ids.map((f) => f.name).join("_")]: Object.fromEntries(ids.map((f) => [f.name, valueFor(f, n)])) };
}

let db: TestDatabase;
let prisma: PrismaClient;
let sql: pg.Client;

beforeAll(async () => {
  db = unusedTestDatabase();
  await migrateDatabase({ connectionString: db.url });
  prisma = createPrismaClient(db.url);
  sql = new pg.Client({ connectionString: db.url });
  await sql.connect();
});

afterAll(async () => {
  await prisma?.$disconnect();
  await sql?.end();
  await db?.drop();
});

describe("schema.prisma as read by this test", () => {
  it("declares the models and fields the generated client has (else: npm run generate)", () => {
    expect(schema.models.map((m) => m.name).sort()).toEqual(Object.values(Prisma.ModelName).sort());
    const scalarFields = Prisma as unknown as Record<string, Record<string, string> | undefined>;
    for (const model of schema.models) {
      expect({ model: model.name, fields: model.fields.map((f) => f.name).sort() }).toEqual({
        model: model.name,
        fields: Object.values(scalarFields[`${model.name}ScalarFieldEnum`] ?? {}).sort(),
      });
    }
  });

  it("declares the enums the generated client has", () => {
    const generated = Object.fromEntries(Object.entries(generatedEnums).map(([name, values]) => [name, Object.values(values as Record<string, string>)]));
    expect(Object.fromEntries(schema.enums.map((e) => [e.name, e.values]))).toEqual(generated);
  });
});

describe("the migrated database matches schema.prisma", () => {
  it("has exactly the declared tables", async () => {
    const { rows } = await sql.query<{ table_name: string }>(
      `SELECT table_name FROM information_schema.tables
       WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> '_prisma_migrations'`,
    );
    expect(rows.map((r) => r.table_name).sort()).toEqual(schema.models.map((m) => m.table).sort());
  });

  it.each(schema.models.map((m) => [m.name, m] as const))("%s: columns have the declared names, types, nullability and defaults", async (_name, model) => {
    const { rows } = await sql.query<{ column_name: string; type: string; is_nullable: string; has_default: boolean }>(
      `SELECT column_name,
              CASE WHEN data_type = 'USER-DEFINED' THEN udt_name
                   WHEN datetime_precision IS NOT NULL AND data_type LIKE 'timestamp%' THEN data_type || '(' || datetime_precision || ')'
                   WHEN character_maximum_length IS NOT NULL THEN data_type || '(' || character_maximum_length || ')'
                   ELSE data_type END AS type,
              is_nullable, column_default IS NOT NULL AS has_default
       FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1`,
      [model.table],
    );
    const actual = rows.map((r) => ({ column: r.column_name, type: r.type, nullable: r.is_nullable === "YES", hasDefault: r.has_default }));
    const declared = model.fields.map((f) => ({ column: f.column, type: expectedColumnType(f), nullable: f.optional, hasDefault: f.hasDefault }));
    const byColumn = (a: { column: string }, b: { column: string }) => a.column.localeCompare(b.column);
    expect(actual.sort(byColumn)).toEqual(declared.sort(byColumn));
  });

  it("has the declared enum types with the declared labels in order", async () => {
    const { rows } = await sql.query<{ name: string; labels: string[] }>(
      `SELECT t.typname::text AS name, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels
       FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
       WHERE n.nspname = 'public' GROUP BY t.typname`,
    );
    const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);
    expect(rows.sort(byName)).toEqual(schema.enums.map((e) => ({ name: e.dbName, labels: e.values })).sort(byName));
  });

  it("has the declared indexes (name, columns, uniqueness; partial predicates live only in the SQL)", async () => {
    const { rows } = await sql.query<{ name: string; columns: string[]; unique: boolean }>(
      `SELECT i.relname::text AS name, ix.indisunique AS unique,
              array(SELECT a.attname::text FROM unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                    JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum ORDER BY k.ord) AS columns
       FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid
       WHERE t.relname = ANY($1::text[])`,
      [schema.models.map((m) => m.table)],
    );
    const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);
    expect(rows.sort(byName)).toEqual(schema.models.flatMap((m) => m.indexes).sort(byName));
  });
});

describe("every model through the Prisma client", () => {
  it.each(schema.models.map((m) => [m.name, m] as const))("%s: create, read and update every field, then null every optional one", async (_name, model) => {
    const delegate = delegateOf(prisma, model);
    const ids = idFieldsOf(model);
    const where = whereOf(ids, 1);

    const created = rowOf(model, 1);
    expect(await delegate.create({ data: created })).toEqual(created);
    expect(await delegate.findUniqueOrThrow({ where })).toEqual(created);

    const updated = { ...rowOf(model, 2, model.fields.filter((f) => !ids.includes(f))), ...Object.fromEntries(ids.map((f) => [f.name, valueFor(f, 1)])) };
    expect(await delegate.update({ where, data: updated })).toEqual(updated);
    expect(await delegate.findUniqueOrThrow({ where })).toEqual(updated);

    const optional = model.fields.filter((f) => f.optional);
    // A nullable Json column takes Prisma.DbNull: a plain null would mean JSON's null value.
    const nulls = Object.fromEntries(optional.map((f) => [f.name, f.type === "Json" ? Prisma.DbNull : null]));
    await delegate.update({ where, data: nulls });
    expect(await delegate.findUniqueOrThrow({ where })).toEqual({ ...updated, ...Object.fromEntries(optional.map((f) => [f.name, null])) });
  });

  it.each(schema.models.map((m) => [m.name, m] as const))("%s: a row with only the required fields gets the database defaults", async (_name, model) => {
    const delegate = delegateOf(prisma, model);
    const required = model.fields.filter((f) => !f.optional && !f.hasDefault);
    const row = await delegate.create({ data: rowOf(model, 3, required) });
    for (const f of model.fields) {
      if (f.optional) expect({ [f.name]: row[f.name] }).toEqual({ [f.name]: null });
      else expect({ [f.name]: row[f.name] }).not.toEqual({ [f.name]: null });
    }
  });
});

describe("the report views", () => {
  it("can each be selected from, with rows in the tables", async () => {
    const { rows } = await sql.query<{ table_name: string }>(
      `SELECT table_name FROM information_schema.views WHERE table_schema = 'public' AND table_name LIKE 'report\\_%' ORDER BY table_name`,
    );
    expect(rows.length).toBeGreaterThan(0);
    for (const { table_name } of rows) {
      await expect(sql.query(`SELECT * FROM ${pg.escapeIdentifier(table_name)}`)).resolves.toBeDefined();
    }
  });
});
