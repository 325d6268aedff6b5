import type { Socket } from "node:net";
import type { Redis } from "ioredis";
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

describe("redis store batching", () => {
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
});
