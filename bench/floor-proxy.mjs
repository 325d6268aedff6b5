/**
 * The peer benchmark's bare Hono + undici proxy, with two hooks for a store: `begin(key)` before a
 * POST carrying an Idempotency-Key is forwarded (false: answered 409, not forwarded) and
 * `store(key, status, headers, body)` after its answer is read. The floors (bench/*-floor.mjs) are
 * this and the least their store must do, so that they differ from the bare proxy by that alone.
 * Env: PORT, UPSTREAM.
 */
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { Pool } from "undici";

// Hop-by-hop headers (RFC 9110 7.6.1) and those the client and server libraries compute.
const DROP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer"]);
for (const name of ["upgrade", "host", "content-length"]) DROP.add(name);

export function serveFloor({ begin, store }) {
  const pool = new Pool(String(process.env.UPSTREAM), {
    connections: 128,
    pipelining: 1,
    keepAliveTimeout: 60_000,
  });
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
    if (key !== null && !(await begin(key))) return c.text("in flight or done", 409);
    const r = await pool.request({ method: req.method, path, headers, body });
    const answer = Buffer.from(await r.body.arrayBuffer());
    const pairs = [];
    const out = new Headers();
    for (const [k, v] of Object.entries(r.headers)) {
      if (DROP.has(k) || v === undefined) continue;
      for (const one of Array.isArray(v) ? v : [v]) {
        out.append(k, one);
        pairs.push([k, one]);
      }
    }
    if (key !== null) await store(key, r.statusCode, pairs, answer);
    return new Response(answer, { status: r.statusCode, headers: out });
  });
  serve({ fetch: app.fetch, port: Number(process.env.PORT), hostname: "127.0.0.1" });
}
