import type { Cluster, Redis } from "ioredis";
import type { IdempotencyStore } from "../../src/store/index.js";
import { type ModelFixture, onServerClock } from "./state-model.js";

/**
 * The state-machine model on a Redis store, whatever the topology. Leases, settle times and expiry
 * are decided by the server's TIME and key expiry; the model's time passes by making those run out,
 * key by key, as they would (`admin` reaches the keys: a plain client, or a cluster client).
 */
export function redisModelFixture(
  store: IdempotencyStore,
  admin: Redis | Cluster,
  prefix: string,
): ModelFixture {
  const k = (key: string, part: string) => `${prefix}{${key}}:${part}`;
  return {
    store,
    leaseLapse: async (key) => {
      await admin.del(k(key, "l"));
    },
    settleElapse: async (key) => {
      await admin.del(k(key, "l"), k(key, "s"));
    },
    recordExpire: async (key) => {
      const [state, expires] = await admin.hmget(k(key, "r"), "state", "expires");
      const counts = state === "unknown" || state === "in_flight";
      // Past its logical end a record that must be reported is kept; a second step drops it.
      if (counts && expires !== "0") await admin.hset(k(key, "r"), "expires", "0");
      else await admin.del(k(key, "r"));
      await admin.del(k(key, "l"), k(key, "s"));
    },
    ...onServerClock(),
  };
}
