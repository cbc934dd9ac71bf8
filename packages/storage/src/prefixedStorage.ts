import type { Readable } from "node:stream";
import { validateKey } from "./keys";
import type { ObjectInfo, ReadOptions, Storage, WriteOptions, WriteResult } from "./storage";

/**
 * A folder of another storage, seen as a storage of its own: key `k` is the inner storage's
 * `folder/k`. The folder and every key are validated like keys (no `..`, nothing absolute),
 * and the inner storage applies its own confinement (symlinks, roots) to the joined key, so a
 * folder can never reach past its storage. Used for job targets such as `restore/alice`.
 * Closing it closes the inner storage, which this wrapper owns.
 */
export class PrefixedStorage implements Storage {
  readonly kind: string;
  readonly label: string;
  private readonly folder: string;

  constructor(
    private readonly inner: Storage,
    folder: string,
  ) {
    this.folder = validateKey(folder);
    this.kind = inner.kind;
    this.label = `${inner.label}/${this.folder}`;
  }

  private full(key: string): string {
    return `${this.folder}/${validateKey(key)}`;
  }

  uri(key: string): string {
    return this.inner.uri(this.full(key));
  }

  stat(key: string, options?: ReadOptions): Promise<ObjectInfo> {
    return this.inner.stat(this.full(key), options).then((info) => ({ ...info, key: validateKey(key) }));
  }

  createReadStream(key: string, options?: ReadOptions): Promise<Readable> {
    return this.inner.createReadStream(this.full(key), options);
  }

  readBuffer(key: string, options?: ReadOptions): Promise<Buffer> {
    return this.inner.readBuffer(this.full(key), options);
  }

  async write(key: string, body: Readable | Buffer, options?: WriteOptions): Promise<WriteResult> {
    const result = await this.inner.write(this.full(key), body, options);
    return { ...result, key: validateKey(key) };
  }

  exists(key: string, options?: ReadOptions): Promise<{ size: number; sha256: string } | null> {
    return this.inner.exists(this.full(key), options);
  }

  async *list(prefix = "", options?: ReadOptions): AsyncIterable<ObjectInfo> {
    const start = `${this.folder}/`;
    for await (const info of this.inner.list(`${start}${prefix}`, options)) {
      if (info.key.startsWith(start)) yield { ...info, key: info.key.slice(start.length) };
    }
  }

  check(role: "source" | "destination"): Promise<void> {
    return this.inner.check?.(role) ?? Promise.resolve();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
