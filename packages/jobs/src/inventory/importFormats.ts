import type { Readable } from "node:stream";
import { createInterface } from "node:readline";
import { parse } from "csv-parse";

/**
 * The two inventory file formats `fleet inventory import` reads, as a stream of raw records
 * with the line each starts on (so every error names its line):
 * - CSV with a header line naming the columns (`uri,size,owner,sha256`; owner and sha256 may be
 *   absent or empty), RFC 4180 quoting (a quoted field may hold commas, quotes and newlines);
 * - JSON Lines: one object per line, `{"uri": "...", "size": 123, "owner": "...", "sha256": "..."}`.
 */
export type InventoryFormat = "csv" | "jsonl";

export interface RawRecord {
  /** 1-based line of the file the record starts on. */
  line: number;
  /** The parsed record, or why the line could not be parsed at all. */
  record?: Record<string, unknown>;
  error?: string;
}

export function formatOf(path: string): InventoryFormat | undefined {
  const lower = path.toLowerCase();
  if (lower.endsWith(".csv")) return "csv";
  if (lower.endsWith(".jsonl") || lower.endsWith(".ndjson") || lower.endsWith(".json")) return "jsonl";
  return undefined;
}

export function readRecords(input: Readable, format: InventoryFormat): AsyncIterable<RawRecord> {
  return format === "csv" ? readCsv(input) : readJsonLines(input);
}

async function* readJsonLines(input: Readable): AsyncGenerator<RawRecord> {
  let line = 0;
  for await (const text of createInterface({ input, crlfDelay: Infinity })) {
    line++;
    if (text.trim() === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      yield { line, error: `not JSON: ${(err as Error).message}` };
      continue;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) yield { line, error: "expected a JSON object" };
    else yield { line, record: value as Record<string, unknown> };
  }
}

async function* readCsv(input: Readable): AsyncGenerator<RawRecord> {
  const parser = input.pipe(
    parse({
      bom: true,
      columns: (header: string[]) => header.map((h) => h.trim().toLowerCase()),
      skip_empty_lines: true,
      trim: true,
      info: true,
    }),
  );
  try {
    for await (const row of parser as AsyncIterable<{ record: Record<string, string>; info: { lines: number; raw?: string } }>) {
      // info.lines is where the record ends; a record starts as many lines earlier as it holds newlines.
      yield { line: row.info.lines - countNewlines(row.record), record: row.record };
    }
  } catch (err) {
    const e = err as Error & { lines?: number };
    yield { line: e.lines ?? 0, error: `CSV: ${e.message}` };
  }
}

function countNewlines(record: Record<string, string>): number {
  let n = 0;
  for (const value of Object.values(record)) for (const c of value) if (c === "\n") n++;
  return n;
}
