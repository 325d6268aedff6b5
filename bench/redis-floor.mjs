/**
 * The floor of a first attempt on Redis with this gateway's stack: the bare proxy (floor-proxy.mjs)
 * plus the two Redis round trips a first attempt needs, through ioredis, each the least script that
 * could do it: a begin that writes an in-flight record unless one is there, and a write that stores
 * the answer. No key derivation, fingerprint, lease, fencing, log or metrics: whatever the gateway
 * costs beyond this is its own.
 *
 * `bench/interleaved.sh redis` runs it (FLOOR=1) with the peer benchmark's packages, as that proxy
 * runs, so that the two differ by the Redis round trips alone. Env: PORT, UPSTREAM, REDIS_URL.
 */
import { Redis } from "ioredis";
import { serveFloor } from "./floor-proxy.mjs";

const redis = new Redis(String(process.env.REDIS_URL), { enableAutoPipelining: true });
const BEGIN =
  "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end " +
  "redis.call('HSET', KEYS[1], 'state', 'in_flight', 'lease', ARGV[1]) redis.call('PEXPIRE', KEYS[1], 60000) return 1";
const STORE =
  "redis.call('HSET', KEYS[1], 'state', 'completed', 'status', ARGV[1], 'body', ARGV[2]) " +
  "redis.call('PEXPIRE', KEYS[1], 86400000) return 1";
// defineCommand's methods send EVALSHA, the script itself once per connection.
redis.defineCommand("floorBegin", { numberOfKeys: 1, lua: BEGIN });
redis.defineCommand("floorStore", { numberOfKeys: 1, lua: STORE });

serveFloor({
  begin: async (key) => (await redis.floorBegin(`floor:${key}`, Date.now())) === 1,
  store: (key, status, _headers, body) => redis.floorStore(`floor:${key}`, status, body),
});
