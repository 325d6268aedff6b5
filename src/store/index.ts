import type { Config } from "../config/index.js";
import { MemoryStore } from "./memory.js";
import type { IdempotencyStore } from "./types.js";

export { MemoryStore, type MemoryStoreOptions } from "./memory.js";
export * from "./types.js";

export interface CreateStoreOptions {
  attemptCapacity?: number;
  onEvict?: () => void;
  /** A begin or an answer that did not reach store.redis.replicas replicas in time. */
  onShortfall?: (step: "begin" | "complete") => void;
}

/**
 * The one way into a store. The Redis and PostgreSQL stores are loaded only when asked for, so the
 * memory store never pulls in their clients.
 */
export async function createStore(
  config: Config["store"],
  options: CreateStoreOptions = {},
): Promise<IdempotencyStore> {
  if (config.kind === "memory") {
    const { onShortfall: _replicasOnlyInRedis, ...memoryOptions } = options;
    return new MemoryStore({
      ...memoryOptions,
      maxEntries: config.memory.maxEntries,
      maxBytes: config.memory.maxBytes,
    });
  }
  if (config.kind === "postgres") {
    const { PostgresStore } = await import("./postgres.js");
    const store = new PostgresStore({
      url: config.postgres.url,
      migrate: config.postgres.migrate,
      attemptCapacity: options.attemptCapacity,
    });
    await store.connect();
    return store;
  }
  const { RedisStore } = await import("./redis.js");
  const store = new RedisStore({
    ...config.redis,
    attemptCapacity: options.attemptCapacity,
    onShortfall: options.onShortfall,
  });
  // Not reachable yet is not fatal: requests get 503 (or pass, failMode: open) until it is.
  await store.connect();
  return store;
}
