import { vi } from "vitest";
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
