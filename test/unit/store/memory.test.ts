import { describe, expect, it, vi } from "vitest";
import { MemoryStore } from "../../../src/store/index.js";
import { describeStoreContract } from "../../helpers/store-contract.js";

describeStoreContract("memory", async () => {
  vi.useFakeTimers();
  const store = new MemoryStore();
  return {
    store,
    advance: async (ms) => {
      await vi.advanceTimersByTimeAsync(ms);
    },
    cleanup: async () => {
      await store.close();
      vi.useRealTimers();
    },
  };
});

describe("memory attempt log", () => {
  it("is a bounded ring: the oldest entries give way", async () => {
    const store = new MemoryStore({ attemptCapacity: 3 });
    const entry = (i: number) => ({
      time: i,
      requestId: `r${i}`,
      route: "r",
      outcome: "executed",
      status: 200,
    });
    await store.appendAttempts([1, 2, 3, 4, 5].map(entry));
    expect((await store.recentAttempts({ limit: 10 })).map((e) => e.requestId)).toEqual(["r5", "r4", "r3"]);
    await store.close();
  });
});

describe("memory store at its bound", () => {
  const lease = (token: string) => ({
    token,
    fingerprint: "f",
    leaseMs: 10_000,
    ttlMs: 86_400_000,
    settleMs: 0,
    takeOverUnknown: false,
  });
  const answer = {
    status: 201,
    headers: [["content-type", "text/plain"]] as [string, string][],
    body: Buffer.from("ok"),
  };

  it("evicts the oldest answers, and each new record costs a bounded number of steps however many came before", async () => {
    const bound = 1_000;
    let evicted = 0;
    const store = new MemoryStore({ maxEntries: bound, onEvict: () => evicted++ });
    const total = 20_000;
    for (let i = 0; i < total; i++) {
      await store.begin(`k${i}`, lease(`t${i}`));
      await store.complete(`k${i}`, `t${i}`, answer, 86_400_000);
    }
    expect(store.size).toBe(bound);
    expect(evicted).toBe(total - bound);
    expect(await store.get(`k${total - bound - 1}`)).toBeUndefined();
    expect((await store.get(`k${total - bound}`))?.state).toBe("completed");
    // The eviction order's own work: a Set iterated from its start walked every earlier deletion
    // again (V8 keeps them as holes), quadratic in the records written at the bound.
    const { scanned } = (store as unknown as { evictable: { scanned: number } }).evictable;
    expect(scanned).toBeLessThan(8 * total);
    await store.close();
  });
});
