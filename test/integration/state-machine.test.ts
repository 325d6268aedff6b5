/**
 * The key's state machine as a model (test/helpers/state-model.ts), run by fast-check against both
 * stores: several attempts interleaving begin, extend, complete, release and mark-unknown with lease
 * expiry, record expiry, settle expiry, wall-clock steps, lost begin replies and waiters.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, it, vi } from "vitest";
import { MemoryStore } from "../../src/store/index.js";
import { RedisStore } from "../../src/store/redis.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { redisModelFixture } from "../helpers/redis-model.js";
import {
  MODEL_LEASE_MS,
  MODEL_SETTLE_MS,
  MODEL_TTL_MS,
  type ModelFixture,
  runStateMachine,
} from "../helpers/state-model.js";

const HOUR = 3_600_000;

describe("state machine model: memory", () => {
  it("holds every invariant on an injected clock", async () => {
    vi.useFakeTimers();
    // The store's own default clock (monotonic), driven by the fake timers; the sweeper is kept out
    // of the way so that advancing a month does not run it a hundred thousand times.
    const store = new MemoryStore({ sweepIntervalMs: 7 * 86_400_000 });
    const advance = async (ms: number) => {
      await vi.advanceTimersByTimeAsync(ms);
    };
    const fx: ModelFixture = {
      store,
      leaseLapse: () => advance(MODEL_LEASE_MS + 1),
      settleElapse: () => advance(MODEL_LEASE_MS + MODEL_SETTLE_MS + 1),
      recordExpire: () => advance(MODEL_LEASE_MS + MODEL_TTL_MS + 1),
      // Forward and back: a lease measured on the wall clock would end, or last, an hour longer.
      clockStep: async () => {
        vi.setSystemTime(Date.now() + (Math.random() < 0.5 ? HOUR : -HOUR));
      },
      settled: async (waiter) => {
        let done = false;
        waiter.then(
          () => {
            done = true;
          },
          () => {
            done = true;
          },
        );
        await advance(0);
        return done;
      },
    };
    try {
      await runStateMachine(fx, 500, "memory");
    } finally {
      await store.close();
      vi.useRealTimers();
    }
  });
});

describe("state machine model: redis", () => {
  let redis: TestRedis;
  let admin: Redis;
  let store: RedisStore;
  const prefix = "model:";
  beforeAll(async () => {
    redis = await startRedis();
    admin = new Redis(redis.url);
    store = new RedisStore({ url: redis.url, prefix, pollMs: 20 });
    await store.connect();
  });
  afterAll(async () => {
    await store?.close();
    admin?.disconnect();
    await redis?.close();
  });

  it("holds every invariant on the server's clock, its time passed by hand", async () => {
    // Leases, settle times and expiry are decided by the server's TIME and key expiry; the model's
    // time passes by making those run out, key by key, as they would.
    await runStateMachine(redisModelFixture(store, admin, prefix), 300, "redis");
  }, 120_000);
});
