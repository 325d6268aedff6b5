import { afterAll, beforeAll } from "vitest";
import { RedisStore } from "../../src/store/redis.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { describeStoreContract } from "../helpers/store-contract.js";

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.close();
});

describeStoreContract("redis", async () => {
  const store = new RedisStore({ url: redis.url, prefix: `contract:${process.pid}:`, pollMs: 100 });
  await store.connect();
  return {
    store,
    // Leases and TTLs run on the Redis server's clock; there is nothing to fake.
    advance: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    cleanup: () => store.close(),
  };
});
