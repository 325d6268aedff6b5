/**
 * The floor of a first attempt on the memory store with this gateway's stack: the peer benchmark's
 * bare Hono + undici proxy, plus the least an embedded store must do: refuse a key that has a record,
 * write an in-flight record, replace it with the answer, and keep answers up to the gateway's default
 * bound (100,000, oldest evicted first), as the gateway keeps them for a day. No key derivation,
 * fingerprint, lease, fencing, log or metrics: whatever the gateway costs beyond this is its own.
 *
 * `bench/interleaved.sh memory` runs it (FLOOR=1) with the peer benchmark's packages, as that proxy
 * runs. Env: PORT, UPSTREAM.
 */
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { Pool } from "undici";

const port = Number(process.env.PORT);
const pool = new Pool(String(process.env.UPSTREAM), {
  connections: 128,
  pipelining: 1,
  keepAliveTimeout: 60_000,
});
const MAX_RECORDS = 100_000;
const records = new Map();
// Oldest first; a head index rather than shift(), which copies the array.
let order = [];
let head = 0;
function keep(key, record) {
  records.set(key, record);
  order.push(key);
  if (records.size <= MAX_RECORDS) return;
  records.delete(order[head++]);
  if (head > MAX_RECORDS) {
    order = order.slice(head);
    head = 0;
  }
}

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
  const key = req.method === "POST" ? req.headers.get("idempotency-key") : null;
  if (key !== null) {
    if (records.has(key)) return c.text("in flight or done", 409);
    records.set(key, { state: "in_flight", since: Date.now() });
  }
  const r = await pool.request({ method: req.method, path, headers, body });
  const answer = Buffer.from(await r.body.arrayBuffer());
  const stored = [];
  const out = new Headers();
  for (const [k, v] of Object.entries(r.headers)) {
    if (DROP.has(k) || v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) {
      out.append(k, one);
      stored.push([k, one]);
    }
  }
  if (key !== null) keep(key, { state: "completed", status: r.statusCode, headers: stored, body: answer });
  return new Response(answer, { status: r.statusCode, headers: out });
});
serve({ fetch: app.fetch, port, hostname: "127.0.0.1" });
