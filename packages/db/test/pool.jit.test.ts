import { createPool } from "@fleet/db/pool";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * createPool turns PostgreSQL's JIT off per connection (SET after connecting), leaving the
 * session's other settings alone. A startup option did not: it replaced PGOPTIONS and lost to a
 * DATABASE_URL's own options= (found by review).
 */
describe("createPool: JIT off, the operator's session settings kept", () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database?.drop();
  });

  async function show(url: string, setting: string, jit?: boolean): Promise<string> {
    const db = createPool({ connectionString: url, max: 1, ...(jit === undefined ? {} : { jit }) });
    try {
      return (await db.query(`SELECT current_setting('${setting}') AS v`)).rows[0].v as string;
    } finally {
      await db.end();
    }
  }

  it("turns JIT off by default", async () => {
    expect(await show(database.url, "jit")).toBe("off");
  });

  it("PGOPTIONS still applies (it did before the change)", async () => {
    const saved = process.env.PGOPTIONS;
    process.env.PGOPTIONS = "-c work_mem=7MB";
    try {
      // With JIT left alone, and with it off (the default): PGOPTIONS is honoured both ways.
      expect(await show(database.url, "work_mem", true)).toBe("7MB");
      expect(await show(database.url, "work_mem")).toBe("7MB");
    } finally {
      if (saved === undefined) delete process.env.PGOPTIONS;
      else process.env.PGOPTIONS = saved;
    }
  });

  it("a DATABASE_URL with its own options= keeps them and still has JIT off", async () => {
    const url = `${database.url}${database.url.includes("?") ? "&" : "?"}options=${encodeURIComponent("-c work_mem=7MB")}`;
    expect(await show(url, "work_mem")).toBe("7MB");
    expect(await show(url, "jit")).toBe("off");
  });
});
