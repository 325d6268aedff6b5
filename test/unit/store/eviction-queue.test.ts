import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EvictionQueue } from "../../../src/store/eviction-queue.js";

describe("EvictionQueue", () => {
  it("yields live keys oldest first, as an insertion-ordered Set would, whatever pushes and deletes came before", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 40 })), { maxLength: 5_000 }),
        (ops) => {
          const queue = new EvictionQueue();
          const model = new Set<string>();
          for (const [push, n] of ops) {
            const key = `k${n}`;
            if (push) {
              queue.push(key);
              model.delete(key);
              model.add(key);
            } else {
              queue.delete(key);
              model.delete(key);
            }
          }
          expect(queue.size).toBe(model.size);
          expect([...queue.oldest()]).toEqual([...model]);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("lets the caller delete each key it is given", () => {
    const queue = new EvictionQueue();
    for (const k of ["a", "b", "c", "d"]) queue.push(k);
    const taken: string[] = [];
    for (const key of queue.oldest()) {
      if (taken.length === 2) break;
      taken.push(key);
      queue.delete(key);
    }
    expect(taken).toEqual(["a", "b"]);
    expect([...queue.oldest()]).toEqual(["c", "d"]);
  });
});
