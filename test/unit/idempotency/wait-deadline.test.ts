import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { WaitDeadline, WaitDeadlineReached } from "../../../src/idempotency/wait-deadline.js";
import { MemoryStore } from "../../../src/store/index.js";

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("a wait's deadline", () => {
  it("ends a store's wait at its time, with its reason, and not a moment before", async () => {
    const store = new MemoryStore();
    await store.begin("k", {
      token: "t",
      fingerprint: "f",
      leaseMs: 60_000,
      ttlMs: 60_000,
      settleMs: 0,
      takeOverUnknown: false,
    });
    const deadline = new WaitDeadline(1_000);
    const waiting = store.waitFor("k", deadline).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(999);
    expect(deadline.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(deadline.aborted).toBe(true);
    expect(await waiting).toBeInstanceOf(WaitDeadlineReached);
    await store.close();
  });

  it("cleared, or its listener removed, it calls nobody", async () => {
    const called: string[] = [];
    const cleared = new WaitDeadline(10);
    cleared.addEventListener("abort", () => called.push("cleared"));
    cleared.clear();
    const removed = new WaitDeadline(10);
    const listener = () => called.push("removed");
    removed.addEventListener("abort", listener);
    removed.removeEventListener("abort", listener);
    await vi.advanceTimersByTimeAsync(20);
    expect(called).toEqual([]);
    expect(cleared.aborted).toBe(false);
    expect(removed.aborted).toBe(true);
  });
});
