import { KeyTemplate } from "@fleet/storage/keyTemplate";

/** What a DESTINATION_KEY_TEMPLATE may use, from the file's source_files row. */
export const KEY_FIELDS = ["path", "dir", "name", "ext", "owner", "id", "year", "month", "day"] as const;

export interface KeyedFile {
  id: number;
  /** The source key (source_files.uri). */
  key: string;
  name: string;
  owner?: string | null;
  createdAt?: Date | null;
}

export function keyTemplate(template: string): KeyTemplate {
  return new KeyTemplate(template, KEY_FIELDS);
}

/**
 * The destination key of a file: its source key unless DESTINATION_KEY_TEMPLATE says
 * otherwise (`{owner}/{year}/{path}`). year/month/day are the row's created_at in UTC; an
 * empty owner leaves no empty folder. A field that makes the key invalid ("..", control
 * characters) fails that file as permanent `invalid-key`.
 */
export function destinationKeyOf(template: KeyTemplate | undefined, file: KeyedFile): string {
  if (!template || template.isIdentity) return file.key;
  const slash = file.key.lastIndexOf("/");
  const dot = file.name.lastIndexOf(".");
  const created = file.createdAt ?? null;
  const pad = (n: number) => String(n).padStart(2, "0");
  return template.render({
    path: file.key,
    dir: slash < 0 ? "" : file.key.slice(0, slash),
    name: file.name,
    ext: dot > 0 ? file.name.slice(dot + 1) : "",
    owner: file.owner ?? "",
    id: String(file.id),
    year: created ? String(created.getUTCFullYear()) : "",
    month: created ? pad(created.getUTCMonth() + 1) : "",
    day: created ? pad(created.getUTCDate()) : "",
  });
}
