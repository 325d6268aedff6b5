/**
 * The floor of a first attempt on Redis with this gateway's stack: the peer benchmark's bare Hono +
 * undici proxy, plus the two Redis round trips a first attempt needs, through ioredis, each the least
 * script that could do it: a begin that writes an in-flight record unless one is there, and a write
 * that stores the answer. No key derivation, fingerprint, lease, fencing, log or metrics: whatever
 * the gateway costs beyond this is its own.
 *
 * `bench/interleaved.sh` runs it (FLOOR=1) with the peer benchmark's packages, as that proxy runs,
 * so that the two differ by the Redis round trips alone. Env: PORT, UPSTREAM, REDIS_URL.
 */
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { Redis } from "ioredis";
import { Pool } from "undici";

const port = Number(process.env.PORT);
const pool = new Pool(String(process.env.UPSTREAM), {
  connections: 128,
  pipelining: 1,
  keepAliveTimeout: 60_000,
});
const redis = new Redis(String(process.env.REDIS_URL), { enableAutoPipelining: true });
const BEGIN =
  "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end " +
  "redis.call('HSET', KEYS[1], 'state', 'in_flight', 'lease', ARGV[1]) redis.call('PEXPIRE', KEYS[1], 60000) return 1";
const STORE =
  "redis.call('HSET', KEYS[1], 'state', 'completed', 'status', ARGV[1], 'body', ARGV[2]) " +
  "redis.call('PEXPIRE', KEYS[1], 86400000) return 1";
redis.defineCommand("floorBegin", { numberOfKeys: 1, lua: BEGIN });
redis.defineCommand("floorStore", { numberOfKeys: 1, lua: STORE });
// defineCommand's methods send EVALSHA, the script itself once per connection.
const scripts = redis;

// Hop-by-hop headers (RFC 9110 7.6.1) and those the client and server libraries compute.
const DROP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer"]);
for (const name of ["upgrade", "host", "content-length"]) DROP.add(name);

const app = new Hono();
app.all("*", async (c) => {
  const req = c.req.raw;
  const headers = {};
  req.headers.forEach((v, k) => {
    if (!DROP.has(k)) headers[k] = v;
  });
  const url = req.url;
  const path = url.slice(url.indexOf("/", url.indexOf("//") + 2));
  const body =
    req.method === "GET" || req.method === "HEAD" ? undefined : Buffer.from(await req.arrayBuffer());
  const key = `floor:${req.headers.get("idempotency-key")}`;
  if (req.method === "POST" && (await scripts.floorBegin(key, Date.now())) !== 1)
    return c.text("in flight or done", 409);
  const r = await pool.request({ method: req.method, path, headers, body });
  const answer = Buffer.from(await r.body.arrayBuffer());
  if (req.method === "POST") await scripts.floorStore(key, r.statusCode, answer);
  const out = new Headers();
  for (const [k, v] of Object.entries(r.headers)) {
    if (DROP.has(k) || v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) out.append(k, one);
  }
  return new Response(answer, { status: r.statusCode, headers: out });
});
serve({ fetch: app.fetch, port, hostname: "127.0.0.1" });
