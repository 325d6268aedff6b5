import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  type IdempotencyStore,
  type Lease,
  RecordState,
  type StoredResponse,
} from "../../src/store/index.js";

export interface StoreFixture {
  store: IdempotencyStore;
  /** Lets `ms` of the store's time pass (fake timers for memory, real time for Redis). */
  advance(ms: number): Promise<void>;
  cleanup(): Promise<void>;
}

/** Leases and TTLs short enough for a store on real time, long enough to be unambiguous. */
const LEASE_MS = 300;
const TTL_MS = 1_500;

const lease = (over: Partial<Lease> = {}): Lease => ({
  fingerprint: "fp-1",
  leaseMs: LEASE_MS,
  ttlMs: TTL_MS,
  takeOverUnknown: false,
  ...over,
});

const response: StoredResponse = {
  status: 201,
  headers: [
    ["content-type", "application/octet-stream"],
    ["set-cookie", "a=1"],
    ["set-cookie", "b=2"],
  ],
  // Not valid UTF-8 on purpose: stores must keep bytes, not text.
  body: Uint8Array.from([0, 255, 254, 0x80, 10, 13, 0xc3, 0x28]),
};

/** One suite every store must pass (redlock's `run("instance"…)`, `run("cluster"…)` habit). */
export function describeStoreContract(name: string, make: () => Promise<StoreFixture>): void {
  describe(`store contract: ${name}`, () => {
    let fx: StoreFixture;
    let store: IdempotencyStore;
    let n = 0;
    let key: string;
    beforeEach(async () => {
      fx = await make();
      store = fx.store;
      key = `contract-${process.pid}-${Date.now()}-${n++}`;
    });
    afterEach(async () => {
      await fx.cleanup();
    });

    it("reads an absent key as undefined", async () => {
      expect(await store.get(key)).toBeUndefined();
    });

    it("gives the lease to one attempt and shows the others the in-flight record", async () => {
      const first = await store.begin(key, lease());
      const second = await store.begin(key, lease({ fingerprint: "fp-2" }));
      expect(first.acquired).toBe(true);
      expect(second).toMatchObject({
        acquired: false,
        record: { state: RecordState.InFlight, fingerprint: "fp-1" },
      });
    });

    it("stores a completed response byte for byte, headers in order", async () => {
      const begun = await store.begin(key, lease());
      if (!begun.acquired) throw new Error("not acquired");
      expect(await store.complete(key, begun.token, response, TTL_MS)).toBe(true);
      const record = await store.get(key);
      expect(record?.state).toBe(RecordState.Completed);
      if (record?.state !== RecordState.Completed) return;
      expect(record.fingerprint).toBe("fp-1");
      expect(record.response.status).toBe(201);
      expect(record.response.headers).toEqual(response.headers);
      expect(Buffer.from(record.response.body).equals(Buffer.from(response.body))).toBe(true);
    });

    it("refuses writes with another attempt's token (fencing)", async () => {
      const begun = await store.begin(key, lease());
      expect(begun.acquired).toBe(true);
      expect(await store.complete(key, "not-the-token", response, TTL_MS)).toBe(false);
      expect(await store.markUnknown(key, "not-the-token")).toBe(false);
      expect(await store.release(key, "not-the-token")).toBe(false);
      expect(await store.extend(key, "not-the-token", LEASE_MS)).toBe(false);
      expect((await store.get(key))?.state).toBe(RecordState.InFlight);
    });

    it("frees a released key for a new attempt", async () => {
      const begun = await store.begin(key, lease());
      if (!begun.acquired) throw new Error("not acquired");
      expect(await store.release(key, begun.token)).toBe(true);
      expect(await store.get(key)).toBeUndefined();
      expect((await store.begin(key, lease())).acquired).toBe(true);
    });

    it("keeps an unknown outcome and does not hand the key out again unless asked to", async () => {
      const begun = await store.begin(key, lease());
      if (!begun.acquired) throw new Error("not acquired");
      expect(await store.markUnknown(key, begun.token)).toBe(true);
      expect((await store.get(key))?.state).toBe(RecordState.Unknown);
      expect(await store.begin(key, lease())).toMatchObject({
        acquired: false,
        record: { state: "unknown" },
      });
      expect(await store.begin(key, lease({ takeOverUnknown: true }))).toMatchObject({
        acquired: true,
        tookOver: true,
      });
    });

    it("says a fresh key was not taken over", async () => {
      expect(await store.begin(key, lease({ takeOverUnknown: true }))).toMatchObject({
        acquired: true,
        tookOver: false,
      });
    });

    it("answers a ping", async () => {
      await expect(store.ping()).resolves.toBeUndefined();
    });

    it("reads an in-flight record whose lease ran out as unknown, and fences the old attempt", async () => {
      const old = await store.begin(key, lease());
      if (!old.acquired) throw new Error("not acquired");
      await fx.advance(LEASE_MS + 100);
      expect((await store.get(key))?.state).toBe(RecordState.Unknown);
      const taker = await store.begin(key, lease({ takeOverUnknown: true }));
      if (!taker.acquired) throw new Error("take-over refused");
      expect(await store.complete(key, old.token, response, TTL_MS)).toBe(false);
      expect(await store.release(key, old.token)).toBe(false);
      expect((await store.get(key))?.state).toBe(RecordState.InFlight);
      expect(await store.complete(key, taker.token, response, TTL_MS)).toBe(true);
    });

    it("keeps a lease alive while it is extended", async () => {
      const begun = await store.begin(key, lease());
      if (!begun.acquired) throw new Error("not acquired");
      for (let i = 0; i < 3; i++) {
        await fx.advance(LEASE_MS / 2);
        expect(await store.extend(key, begun.token, LEASE_MS)).toBe(true);
      }
      expect((await store.get(key))?.state).toBe(RecordState.InFlight);
    });

    it("forgets a completed record after its TTL", async () => {
      const begun = await store.begin(key, lease());
      if (!begun.acquired) throw new Error("not acquired");
      await store.complete(key, begun.token, response, 400);
      await fx.advance(500);
      expect(await store.get(key)).toBeUndefined();
    });

    it("wakes a waiter when the attempt completes", async () => {
      const begun = await store.begin(key, lease({ leaseMs: 10_000 }));
      if (!begun.acquired) throw new Error("not acquired");
      const waiting = store.waitFor(key, new AbortController().signal);
      await store.complete(key, begun.token, response, TTL_MS);
      expect((await waiting)?.state).toBe(RecordState.Completed);
    });

    it("wakes a waiter with undefined when the attempt releases the key", async () => {
      const begun = await store.begin(key, lease({ leaseMs: 10_000 }));
      if (!begun.acquired) throw new Error("not acquired");
      const waiting = store.waitFor(key, new AbortController().signal);
      await store.release(key, begun.token);
      expect(await waiting).toBeUndefined();
    });

    it("answers a waiter at once when nothing is in flight", async () => {
      expect(await store.waitFor(key, new AbortController().signal)).toBeUndefined();
    });

    it("wakes a waiter when the lease runs out", async () => {
      const begun = await store.begin(key, lease());
      expect(begun.acquired).toBe(true);
      const waiting = store.waitFor(key, new AbortController().signal);
      await fx.advance(LEASE_MS + 600);
      expect((await waiting)?.state).toBe(RecordState.Unknown);
    });

    it("stops waiting when the signal aborts", async () => {
      await store.begin(key, lease({ leaseMs: 10_000 }));
      const controller = new AbortController();
      const waiting = store.waitFor(key, controller.signal);
      controller.abort(new Error("gave up"));
      await expect(waiting).rejects.toThrow("gave up");
    });

    it("lets an operator resolve an unknown key with a response, or free it, and nothing else", async () => {
      const begun = await store.begin(key, lease());
      if (!begun.acquired) throw new Error("not acquired");
      expect(await store.resolveUnknown(key, response, TTL_MS)).toBe(false);
      await store.markUnknown(key, begun.token);
      expect(await store.resolveUnknown(key, response, TTL_MS)).toBe(true);
      const record = await store.get(key);
      expect(record?.state).toBe(RecordState.Completed);
      expect(
        record?.state === RecordState.Completed &&
          Buffer.from(record.response.body).equals(Buffer.from(response.body)),
      ).toBe(true);
      expect(await store.resolveUnknown(key, null, TTL_MS)).toBe(false);
      const other = `${key}-2`;
      const b = await store.begin(other, lease());
      if (!b.acquired) throw new Error("not acquired");
      await store.markUnknown(other, b.token);
      expect(await store.resolveUnknown(other, null, TTL_MS)).toBe(true);
      expect(await store.get(other)).toBeUndefined();
    });

    it("keeps the attempt log newest first, filters it, and counts attempts on the key's record", async () => {
      const begun = await store.begin(key, lease());
      if (!begun.acquired) throw new Error("not acquired");
      await store.complete(key, begun.token, response, TTL_MS);
      const entry = (outcome: string, route = `r-${key}`) => ({
        time: Date.now(),
        requestId: `${outcome}-${key}`,
        route,
        storeKey: key,
        material: '{"key":["INV-1"],"scope":[]}',
        outcome,
        status: 201,
      });
      await store.appendAttempts([entry("executed"), entry("replayed")]);
      await store.appendAttempts([entry("replayed"), { ...entry("rejected"), storeKey: undefined }]);
      const mine = await store.recentAttempts({ route: `r-${key}`, limit: 10 });
      expect(mine.map((e) => e.outcome)).toEqual(["rejected", "replayed", "replayed", "executed"]);
      expect(await store.recentAttempts({ route: `r-${key}`, outcome: "replayed", limit: 1 })).toHaveLength(
        1,
      );
      expect((await store.recentAttempts({ storeKey: key, limit: 10 })).map((e) => e.outcome)).toEqual([
        "replayed",
        "replayed",
        "executed",
      ]);
      expect((await store.get(key))?.attempts).toBe(3);
      expect(await store.get(`${key}-never`)).toBeUndefined();
    });

    it("purges a record whatever its state", async () => {
      await store.begin(key, lease());
      expect(await store.purge(key)).toBe(true);
      expect(await store.get(key)).toBeUndefined();
      expect(await store.purge(key)).toBe(false);
    });
  });
}
