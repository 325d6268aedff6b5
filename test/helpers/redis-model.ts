import type { Cluster, Redis } from "ioredis";
import type { IdempotencyStore } from "../../src/store/index.js";
import { type ModelFixture, onServerClock } from "./state-model.js";

/**
 * The state-machine model on a Redis store, whatever the topology. Leases, settle times and expiry
 * are decided by the server's TIME against the record's fields; the model's time passes by making
 * those run out, key by key, as they would (`admin` reaches the keys: a plain client, or a cluster
 * client). A record that is not there is left alone: writing a field would create one.
 */
export function redisModelFixture(
  store: IdempotencyStore,
  admin: Redis | Cluster,
  prefix: string,
): ModelFixture {
  const k = (key: string, part: string) => `${prefix}{${key}}:${part}`;
  /** Sets fields (server times in ms) of a record that exists. */
  const lapse = (key: string, ...fields: string[]) =>
    admin.eval(
      "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], unpack(ARGV)) end",
      1,
      k(key, "r"),
      ...fields.flatMap((f) => [f, "0"]),
    );
  return {
    store,
    leaseLapse: async (key) => {
      await lapse(key, "lease");
    },
    settleElapse: async (key) => {
      await lapse(key, "lease", "settle");
    },
    recordExpire: async (key) => {
      const [state, expires] = await admin.hmget(k(key, "r"), "state", "expires");
      const counts = state === "unknown" || state === "in_flight";
      // Past its logical end a record that must be reported is kept; a second step drops it.
      if (counts && expires !== "0") await lapse(key, "expires", "lease", "settle");
      else await admin.del(k(key, "r"));
    },
    ...onServerClock(),
  };
}
