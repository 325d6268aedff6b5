import { randomUUID } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  type BeginResult,
  type IdempotencyStore,
  type Lease,
  type LeaseTimes,
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

const SETTLE_MS = 600;

const times = (over: Partial<LeaseTimes> = {}): LeaseTimes => ({
  leaseMs: LEASE_MS,
  ttlMs: TTL_MS,
  settleMs: SETTLE_MS,
  ...over,
});
const lease = (over: Partial<Lease> = {}): Lease => ({
  token: randomUUID(),
  fingerprint: "fp-1",
  takeOverUnknown: false,
  ...times(),
  ...over,
});

/** Begins with a fresh token and returns it; fails the test if the lease was not acquired. */
async function acquire(store: IdempotencyStore, key: string, over: Partial<Lease> = {}) {
  const l = lease(over);
  const begun: BeginResult = await store.begin(key, l);
  if (!begun.acquired) throw new Error(`not acquired: ${JSON.stringify(begun.record.state)}`);
  return { ...begun, token: l.token };
}

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
      const begun = await acquire(store, key);
      expect(await store.complete(key, begun.token, response, TTL_MS)).toBe(true);
      const record = await store.get(key);
      expect(record?.state).toBe(RecordState.Completed);
      if (record?.state !== RecordState.Completed) return;
      expect(record.fingerprint).toBe("fp-1");
      expect(record.response.status).toBe(201);
      expect(record.response.headers).toEqual(response.headers);
      expect(Buffer.from(record.response.body).equals(Buffer.from(response.body))).toBe(true);
    });

    it("gives back every byte value of a body, small or large, as it was stored", async () => {
      const small = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const large = Buffer.alloc(100_000);
      for (let i = 0; i < large.length; i++) large[i] = (i * 7919) % 256;
      for (const [i, body] of [small, large].entries()) {
        const k = `${key}-bytes-${i}`;
        const begun = await acquire(store, k);
        expect(await store.complete(k, begun.token, { ...response, body }, TTL_MS)).toBe(true);
        const record = await store.get(k);
        expect(record?.state).toBe(RecordState.Completed);
        if (record?.state !== RecordState.Completed) return;
        expect(Buffer.from(record.response.body).equals(body)).toBe(true);
        expect(record.response.headers).toEqual(response.headers);
      }
    });

    it("refuses writes with another attempt's token (fencing)", async () => {
      await acquire(store, key);
      expect(await store.complete(key, "not-the-token", response, TTL_MS)).toBe(false);
      expect(await store.markUnknown(key, "not-the-token", times())).toBe(false);
      expect(await store.release(key, "not-the-token")).toBe(false);
      expect(await store.extend(key, "not-the-token", times())).toBe(false);
      expect((await store.get(key))?.state).toBe(RecordState.InFlight);
    });

    it("frees a released key for a new attempt", async () => {
      const begun = await acquire(store, key);
      expect(await store.release(key, begun.token)).toBe(true);
      expect(await store.get(key)).toBeUndefined();
      expect((await store.begin(key, lease())).acquired).toBe(true);
    });

    it("keeps an unknown outcome and does not hand the key out again unless asked to", async () => {
      const begun = await acquire(store, key);
      expect(await store.markUnknown(key, begun.token, times())).toBe(true);
      expect((await store.get(key))?.state).toBe(RecordState.Unknown);
      expect(await store.begin(key, lease())).toMatchObject({
        acquired: false,
        record: { state: "unknown" },
      });
      expect(await store.begin(key, lease({ takeOverUnknown: true }))).toMatchObject({
        acquired: true,
        took: "unknown",
      });
    });

    it("says a fresh key was not taken over", async () => {
      expect(await store.begin(key, lease({ takeOverUnknown: true }))).toMatchObject({
        acquired: true,
        took: "fresh",
      });
    });

    it("answers a ping", async () => {
      await expect(store.ping()).resolves.toBeUndefined();
    });

    it("reads an in-flight record whose lease ran out as unknown, and fences the old attempt", async () => {
      const old = await acquire(store, key);
      await fx.advance(LEASE_MS + 100);
      expect((await store.get(key))?.state).toBe(RecordState.Unknown);
      const taker = await acquire(store, key, { takeOverUnknown: true });
      expect(await store.complete(key, old.token, response, TTL_MS)).toBe(false);
      expect(await store.release(key, old.token)).toBe(false);
      expect((await store.get(key))?.state).toBe(RecordState.InFlight);
      expect(await store.complete(key, taker.token, response, TTL_MS)).toBe(true);
    });

    it("keeps a lease alive while it is extended", async () => {
      const begun = await acquire(store, key);
      for (let i = 0; i < 3; i++) {
        await fx.advance(LEASE_MS / 2);
        expect(await store.extend(key, begun.token, times())).toBe(true);
      }
      expect((await store.get(key))?.state).toBe(RecordState.InFlight);
    });

    it("forgets a completed record after its TTL", async () => {
      const begun = await acquire(store, key);
      await store.complete(key, begun.token, response, 400);
      await fx.advance(500);
      expect(await store.get(key)).toBeUndefined();
    });

    it("wakes a waiter when the attempt completes", async () => {
      const begun = await acquire(store, key, { leaseMs: 10_000 });
      const waiting = store.waitFor(key, new AbortController().signal);
      await store.complete(key, begun.token, response, TTL_MS);
      expect((await waiting)?.state).toBe(RecordState.Completed);
    });

    it("wakes many waiters a batch per turn of the event loop, every one of them in the end", async () => {
      const begun = await acquire(store, key, { leaseMs: 10_000 });
      let woken = 0;
      const waiting = Array.from({ length: 600 }, () =>
        store.waitFor(key, new AbortController().signal).then((record) => {
          woken++;
          return record?.state;
        }),
      );
      await store.complete(key, begun.token, response, TTL_MS);
      await waiting[0];
      // The first batch's answers have all run by now; the next batch waits for the next turn.
      const inFirstTurn = woken;
      expect(inFirstTurn).toBeGreaterThan(0);
      expect(inFirstTurn).toBeLessThanOrEqual(256);
      for (let turn = 0; turn < 10 && woken < 600; turn++) await fx.advance(1);
      expect(woken).toBe(600);
      expect(new Set(await Promise.all(waiting))).toEqual(new Set([RecordState.Completed]));
    });

    it("wakes a waiter with undefined when the attempt releases the key", async () => {
      const begun = await acquire(store, key, { leaseMs: 10_000 });
      const waiting = store.waitFor(key, new AbortController().signal);
      await store.release(key, begun.token);
      expect(await waiting).toBeUndefined();
    });

    it("answers a waiter at once when nothing is in flight", async () => {
      expect(await store.waitFor(key, new AbortController().signal)).toBeUndefined();
    });

    it("wakes a waiter when the lease runs out", async () => {
      await acquire(store, key);
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
      const begun = await acquire(store, key);
      expect(await store.resolveUnknown(key, response, TTL_MS)).toBe(false);
      await store.markUnknown(key, begun.token, times());
      expect(await store.resolveUnknown(key, response, TTL_MS)).toBe(true);
      const record = await store.get(key);
      expect(record?.state).toBe(RecordState.Completed);
      expect(
        record?.state === RecordState.Completed &&
          Buffer.from(record.response.body).equals(Buffer.from(response.body)),
      ).toBe(true);
      expect(await store.resolveUnknown(key, null, TTL_MS)).toBe(false);
      const other = `${key}-2`;
      const b = await acquire(store, other);
      await store.markUnknown(other, b.token, times());
      expect(await store.resolveUnknown(other, null, TTL_MS)).toBe(true);
      expect(await store.get(other)).toBeUndefined();
    });

    it("keeps the attempt log newest first, filters it, and counts attempts on the key's record", async () => {
      const begun = await acquire(store, key);
      await store.complete(key, begun.token, response, TTL_MS);
      // Each entry a millisecond after the last: "newest first" across a cluster's shards is by time,
      // and entries made within one millisecond have no order there.
      let time = Date.now();
      const entry = (outcome: string, route = `r-${key}`) => ({
        time: time++,
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

    it("path 3: a begin that arrives late, while an attempt that took over holds the lease, changes nothing", async () => {
      // A's lease ran out before its begin could matter; B took the key over. Before the fix, A's
      // begin script (run after its separate lock had expired) overwrote B's record.
      const a = await acquire(store, key);
      await fx.advance(LEASE_MS + 100);
      const b = await acquire(store, key, { takeOverUnknown: true });
      const late = await store.begin(key, lease({ token: a.token, takeOverUnknown: true }));
      expect(late).toMatchObject({ acquired: false, record: { state: RecordState.InFlight } });
      expect(await store.complete(key, a.token, response, TTL_MS)).toBe(false);
      expect(await store.complete(key, b.token, response, TTL_MS)).toBe(true);
    });

    it("path 2: keeps an in-flight record past its TTL while its lease is extended", async () => {
      const begun = await acquire(store, key, { ttlMs: 400 });
      for (let i = 0; i < 4; i++) {
        await fx.advance(LEASE_MS / 2);
        expect(await store.extend(key, begun.token, times({ ttlMs: 400 }))).toBe(true);
      }
      // Well past the TTL counted from begin: still in flight, and no one else can begin.
      expect((await store.get(key))?.state).toBe(RecordState.InFlight);
      expect((await store.begin(key, lease({ takeOverUnknown: true }))).acquired).toBe(false);
      expect(await store.complete(key, begun.token, response, TTL_MS)).toBe(true);
    });

    it("path 6: keeps an unknown record a full TTL from the moment it turned unknown", async () => {
      const begun = await acquire(store, key, { ttlMs: 800 });
      for (let i = 0; i < 4; i++) {
        await fx.advance(LEASE_MS / 2);
        await store.extend(key, begun.token, times({ ttlMs: 800 }));
      }
      expect(await store.markUnknown(key, begun.token, times({ ttlMs: 800 }))).toBe(true);
      await fx.advance(500);
      expect((await store.get(key))?.state).toBe(RecordState.Unknown);
      expect((await store.begin(key, lease())).acquired).toBe(false);
    });

    it("path 6: says so when a begin finds an unknown record whose TTL has run out", async () => {
      const begun = await acquire(store, key, { ttlMs: 400 });
      await store.markUnknown(key, begun.token, times({ ttlMs: 400 }));
      await fx.advance(500);
      expect(await store.get(key)).toBeUndefined();
      expect(await store.begin(key, lease())).toMatchObject({ acquired: true, took: "expired" });
    });

    it("an attempt that died leaves an unknown record that also lives a TTL past its lease", async () => {
      await acquire(store, key, { ttlMs: 400 });
      await fx.advance(LEASE_MS + 200);
      expect((await store.get(key))?.state).toBe(RecordState.Unknown);
      await fx.advance(400);
      expect(await store.begin(key, lease())).toMatchObject({ acquired: true, took: "expired" });
    });

    it("fences the late writes of an attempt whose record has passed its TTL (found by the model)", async () => {
      // Shrunk counterexample: Begin, RecordExpire, Complete. The late answer revived an expired record.
      const begun = await acquire(store, key, { ttlMs: 400 });
      await fx.advance(LEASE_MS + 500);
      expect(await store.complete(key, begun.token, response, TTL_MS)).toBe(false);
      expect(await store.markUnknown(key, begun.token, times())).toBe(false);
      expect(await store.begin(key, lease())).toMatchObject({ acquired: true, took: "expired" });
    });

    it("does not revive a lease that has run out", async () => {
      const begun = await acquire(store, key);
      await fx.advance(LEASE_MS + 100);
      expect(await store.extend(key, begun.token, times())).toBe(false);
      expect((await store.get(key))?.state).toBe(RecordState.Unknown);
    });

    it("path 1: counts the settle time of a sent request from the moment it turned unknown", async () => {
      const begun = await acquire(store, key);
      await store.markUnknown(key, begun.token, times());
      const record = await store.get(key);
      expect(record?.state).toBe(RecordState.Unknown);
      const settles = record?.state === RecordState.Unknown ? record.settlesInMs : 0;
      expect(settles).toBeGreaterThan(SETTLE_MS - 200);
      expect(settles).toBeLessThanOrEqual(SETTLE_MS);
      // A take-over learns how long is left, and does not restart it by taking over.
      const taker = await acquire(store, key, { takeOverUnknown: true });
      expect(taker.took).toBe("unknown");
      expect(taker.settlesInMs).toBeGreaterThan(0);
      expect(taker.settlesInMs).toBeLessThanOrEqual(settles);
      expect(await store.release(key, taker.token)).toBe(true);
      await fx.advance(SETTLE_MS + 50);
      const later = await store.get(key);
      expect(later?.state === RecordState.Unknown && later.settlesInMs).toBe(0);
    });

    it("an attempt that never sent starts no settle time", async () => {
      const begun = await acquire(store, key, { settleMs: 0 });
      await store.markUnknown(key, begun.token, times({ settleMs: 0 }));
      const record = await store.get(key);
      expect(record?.state === RecordState.Unknown && record.settlesInMs).toBe(0);
    });

    it("gives a key taken over from unknown back to unknown when it is released without an answer", async () => {
      const first = await acquire(store, key);
      await store.markUnknown(key, first.token, times());
      const taker = await acquire(store, key, { takeOverUnknown: true });
      expect(await store.release(key, taker.token)).toBe(true);
      expect((await store.get(key))?.state).toBe(RecordState.Unknown);
      expect(await store.release(key, taker.token)).toBe(false);
    });

    it("never takes over an unknown record of another payload", async () => {
      const first = await acquire(store, key);
      await store.markUnknown(key, first.token, times());
      expect(await store.begin(key, lease({ takeOverUnknown: true, fingerprint: "fp-2" }))).toMatchObject({
        acquired: false,
        record: { state: RecordState.Unknown, fingerprint: "fp-1" },
      });
    });

    it("path 4: holds a released answer for the waiters, and treats the key as free for new requests", async () => {
      const begun = await acquire(store, key, { leaseMs: 10_000 });
      const waiting = store.waitFor(key, new AbortController().signal);
      const answer: StoredResponse = { status: 503, headers: [["x", "1"]], body: Buffer.from("busy") };
      expect(await store.release(key, begun.token, answer, 1_000)).toBe(true);
      const woke = await waiting;
      expect(woke?.state).toBe(RecordState.Released);
      expect(woke?.state === RecordState.Released && Buffer.from(woke.response?.body ?? []).toString()).toBe(
        "busy",
      );
      expect(await store.begin(key, lease())).toMatchObject({ acquired: true, took: "fresh" });
    });

    it("purges a record whatever its state", async () => {
      await store.begin(key, lease());
      expect(await store.purge(key)).toBe(true);
      expect(await store.get(key)).toBeUndefined();
      expect(await store.purge(key)).toBe(false);
    });
  });
}
