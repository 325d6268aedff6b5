import type { Socket } from "node:net";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisStore } from "../../src/store/redis.js";
import type { Lease } from "../../src/store/types.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.close();
});

const lease = (token: string): Lease => ({
  token,
  fingerprint: "fp",
  leaseMs: 10_000,
  ttlMs: 60_000,
  settleMs: 0,
  takeOverUnknown: false,
});

/** Counts the writes that reach the socket (one per write syscall, whatever the stream buffered). */
function countWrites(socket: Socket): () => number {
  let writes = 0;
  const target = socket as unknown as {
    _write: (...args: unknown[]) => void;
    _writev: (...args: unknown[]) => void;
  };
  const write = target._write.bind(socket);
  const writev = target._writev.bind(socket);
  target._write = (...args) => {
    writes++;
    write(...args);
  };
  target._writev = (...args) => {
    writes++;
    writev(...args);
  };
  return () => writes;
}

describe("what a request costs Redis", () => {
  it("sends the commands of one turn of the event loop in one write, and answers each in order", async () => {
    const store = new RedisStore({ url: redis.url, prefix: `batch:${process.pid}:` });
    try {
      expect(await store.connect()).toBe(true);
      // The store's command connection, observed, not replaced: what reaches the kernel, and how often.
      const connection = (store as unknown as { redis: Redis }).redis;
      const writes = countWrites(connection.stream as Socket);
      const begun = await Promise.all(
        Array.from({ length: 50 }, (_, i) => store.begin(`k${i}`, lease(`t${i}`))),
      );
      expect(begun.every((b) => b.acquired)).toBe(true);
      expect(writes()).toBe(1);
      // Each reply went to its own command: a second begin on each key finds that key's record.
      const again = await Promise.all(
        Array.from({ length: 50 }, (_, i) => store.begin(`k${i}`, lease(`u${i}`))),
      );
      expect(again.map((b) => (b.acquired ? "acquired" : b.record.state))).toEqual(
        Array.from({ length: 50 }, () => "in_flight"),
      );
      expect(writes()).toBe(2);
      // Commands of later turns are not held back: one more, alone, is answered on its own.
      expect((await store.begin("late", lease("late"))).acquired).toBe(true);
      expect(writes()).toBe(3);
    } finally {
      await store.close();
    }
  });

  it("keeps one Redis key per stored key, whatever its state: the lease and settle time are fields", async () => {
    const prefix = `keys:${process.pid}:`;
    const store = new RedisStore({ url: redis.url, prefix });
    const admin = new Redis(redis.url);
    const times = { leaseMs: 10_000, ttlMs: 60_000, settleMs: 5_000 };
    try {
      await store.connect();
      const keys = async () => (await admin.keys(`${prefix}*`)).sort();
      const one = [`${prefix}{k}:r`];
      expect((await store.begin("k", { ...lease("t"), ...times })).acquired).toBe(true);
      expect(await keys()).toEqual(one);
      // The settle time is kept in the record and read back from it.
      expect(await store.markUnknown("k", "t", times)).toBe(true);
      const unknown = await store.get("k");
      expect(unknown?.state).toBe("unknown");
      const left = unknown?.state === "unknown" ? unknown.settlesInMs : -1;
      expect(left).toBeGreaterThan(4_000);
      expect(left).toBeLessThanOrEqual(5_000);
      expect(await keys()).toEqual(one);
      // A take-over sends nothing new yet: the earlier request's settle time stands.
      const taken = await store.begin("k", { ...lease("u"), ...times, takeOverUnknown: true });
      expect(taken.acquired && taken.took).toBe("unknown");
      expect(taken.acquired ? taken.settlesInMs : -1).toBeGreaterThan(4_000);
      const answer = {
        status: 201,
        headers: [["content-type", "application/json"]] as [string, string][],
        body: Buffer.from("{}"),
      };
      expect(await store.complete("k", "u", answer, 60_000)).toBe(true);
      expect((await store.get("k"))?.state).toBe("completed");
      expect(await keys()).toEqual(one);
    } finally {
      admin.disconnect();
      await store.close();
    }
  });
});
