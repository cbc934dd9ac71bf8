import { assignBalanced } from "./planBatch";

describe("assignBalanced", () => {
  it("keeps each server's share of its capacity even, never past it, ties by name", () => {
    const ids = Array.from({ length: 9 }, (_, i) => i + 1);
    const { assigned, unassigned } = assignBalanced(ids, [
      { name: "big", capacity: 6 },
      { name: "small", capacity: 3 },
      { name: "off", capacity: 0 },
    ]);
    const count = (s: string) => assigned.filter((a) => a.server === s).length;
    expect([count("big"), count("small"), count("off")]).toEqual([6, 3, 0]);
    expect(unassigned).toEqual([]);
    // After every step the loads stay within one account of proportional.
    expect(assigned.slice(0, 3).map((a) => a.server)).toEqual(["big", "small", "big"]);
  });

  it("leaves out what no server has room for", () => {
    const { assigned, unassigned } = assignBalanced([1, 2, 3], [{ name: "a", capacity: 2 }]);
    expect(assigned).toHaveLength(2);
    expect(unassigned).toEqual([3]);
  });
});
