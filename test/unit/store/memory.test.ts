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
