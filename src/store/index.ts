import type { Config } from "../config/index.js";
import { MemoryStore } from "./memory.js";
import type { IdempotencyStore } from "./types.js";

export { MemoryStore, type MemoryStoreOptions } from "./memory.js";
export * from "./types.js";

/** The one way into a store. The Redis store is loaded only when asked for, so memory never pulls in ioredis. */
export async function createStore(
  config: Config["store"],
  options: { attemptCapacity?: number; onEvict?: () => void } = {},
): Promise<IdempotencyStore> {
  if (config.kind === "memory") {
    return new MemoryStore({
      ...options,
      maxEntries: config.memory.maxEntries,
      maxBytes: config.memory.maxBytes,
    });
  }
  const { RedisStore } = await import("./redis.js");
  const store = new RedisStore({
    url: config.redis.url,
    prefix: config.redis.prefix,
    attemptCapacity: options.attemptCapacity,
  });
  // Not reachable yet is not fatal: requests get 503 (or pass, failMode: open) until it is.
  await store.connect();
  return store;
}
