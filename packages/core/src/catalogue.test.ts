import { z } from "zod";
import { buildCatalogue, CatalogueError } from "./catalogue";
import { defineJob } from "./jobDefinition";

const job = (name: string, queue = "q") =>
  defineJob({ name, queue, description: name, schema: z.object({ n: z.number() }), handle: async () => name });

describe("buildCatalogue", () => {
  it("accepts a consistent catalogue and finds definitions by name and queue", () => {
    const c = buildCatalogue({ declaredNames: ["a", "b"], queues: ["q", "r"], definitions: { a: job("a"), b: job("b", "r") } });
    expect(c.get("a")?.name).toBe("a");
    expect(c.onQueue("r").map((d) => d.name)).toEqual(["b"]);
    expect(c.names()).toEqual(["a", "b"]);
  });

  it("fails with exact instructions for a declared job without handler", () => {
    expect(() => buildCatalogue({ declaredNames: ["a", "b"], queues: ["q"], definitions: { a: job("a") } })).toThrow(
      'job "b" is declared but has no handler: write a definition for it and list it in packages/jobs/src/processors.ts',
    );
  });

  it("fails on two handlers for one job", () => {
    try {
      buildCatalogue({ declaredNames: ["a"], queues: ["q"], definitions: { a: job("a") }, extra: [job("a")] });
      throw new Error("expected a CatalogueError");
    } catch (err) {
      expect(err).toBeInstanceOf(CatalogueError);
      expect((err as CatalogueError).problems).toEqual(['job "a" has two handlers: remove one of the definitions named "a" (packages/jobs/src/processors.ts)']);
    }
  });

  it("reports undeclared names, unknown queues and mismatched keys together", () => {
    try {
      buildCatalogue({ declaredNames: [], queues: ["q"], definitions: { x: job("y", "nope") } });
      throw new Error("expected a CatalogueError");
    } catch (err) {
      const problems = (err as CatalogueError).problems;
      expect(problems).toHaveLength(3);
      expect(problems[0]).toContain('catalogue key "x" holds the definition named "y"');
      expect(problems[1]).toContain('uses queue "nope", which is not declared');
      expect(problems[2]).toContain('job "y" is not declared');
    }
  });
});
