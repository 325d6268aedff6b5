/**
 * Redis errors that are not outages: a server at maxmemory (OOM), a script cache that was flushed
 * (NOSCRIPT), a server that became a replica (READONLY). None of them may be taken for "the store is
 * down" (which, under failMode: open, forwards unprotected), and /readyz must tell.
 */
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { RedisStore } from "../../src/store/redis.js";
import { startTestGateway } from "../helpers/gateway.js";
import { send } from "../helpers/http.js";
import { startRedis, until } from "../helpers/redis.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { startUpstream } from "../helpers/upstream.js";

const use = closeAfterEach();

async function setup() {
  const redis = use(await startRedis());
  const admin = new Redis(redis.url);
  use({ close: async () => admin.disconnect() });
  const upstream = use(await startUpstream());
  const store = new RedisStore({ url: redis.url, prefix: "faults:" });
  await store.connect();
  const gateway = use(
    await startTestGateway({ upstream: upstream.url, store: { kind: "redis", failMode: "open" } }, store),
  );
  const post = (key: string) =>
    send(`${gateway.url}/invoices`, { headers: { "idempotency-key": key }, body: "{}" });
  const ready = async () => {
    const res = await fetch(`${gateway.adminUrl}/readyz`);
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  return { redis, admin, upstream, gateway, post, ready };
}

describe("redis errors that are not outages", () => {
  it("at maxmemory refuses with 503 STORE_FULL, forwards nothing unprotected, and /readyz says why", async () => {
    const { admin, upstream, post, ready } = await setup();
    await admin.config("SET", "maxmemory-policy", "noeviction");
    await admin.config("SET", "maxmemory", "1");
    const reply = await post("oom-1");
    expect(reply.status).toBe(503);
    expect(JSON.parse(reply.body.toString()).code).toBe("STORE_FULL");
    expect(upstream.calls).toHaveLength(0);
    const r = await ready();
    expect(r.status).toBe(503);
    expect(JSON.stringify(r.body)).toMatch(/maxmemory/);
    // Memory back: the very next request is protected again.
    await admin.config("SET", "maxmemory", "0");
    expect((await post("oom-1")).status).toBe(200);
    expect((await post("oom-1")).headers["idempotent-replayed"]).toBe("true");
    expect(upstream.calls).toHaveLength(1);
    expect((await ready()).status).toBe(200);
  });

  it("reloads its scripts after SCRIPT FLUSH instead of reporting the store down", async () => {
    const { admin, upstream, post } = await setup();
    expect((await post("ns-0")).status).toBe(200);
    await admin.script("FLUSH");
    // Concurrent requests, batched: each EVALSHA that finds its script gone is sent again as an EVAL.
    const keys = Array.from({ length: 20 }, (_, i) => `ns-${i + 1}`);
    const first = await Promise.all(keys.map(post));
    const retry = await Promise.all(keys.map(post));
    expect(first.map((r) => r.status)).toEqual(keys.map(() => 200));
    expect(retry.map((r) => r.headers["idempotent-replayed"])).toEqual(keys.map(() => "true"));
    expect(upstream.calls).toHaveLength(21);
  });

  it("on a server that became a read-only replica refuses (not unprotected) and /readyz says READONLY", async () => {
    const { redis, admin, upstream, post, ready } = await setup();
    expect((await post("ro-0")).status).toBe(200);
    const other = use(await startRedis());
    // Made a replica of an empty primary: it answers READONLY to every write from now on.
    await admin.replicaof("127.0.0.1", other.port);
    await admin.config("SET", "replica-read-only", "yes");
    const reply = await post("ro-1");
    expect(reply.status).toBe(503);
    expect(JSON.parse(reply.body.toString()).detail).toMatch(/READONLY|read-only/i);
    expect(upstream.calls).toHaveLength(1);
    // The store reconnects on READONLY (a managed service's name may point at a new primary by
    // now); connected again to the same replica, /readyz names it.
    await until(async () => /READONLY|read-only/i.test(JSON.stringify((await ready()).body)), 10_000);
    expect((await ready()).status).toBe(503);
    // A primary again (as after a managed failover back): protected again, nothing sent unprotected.
    await admin.replicaof("NO", "ONE");
    await until(async () => (await post("ro-1")).status === 200, 10_000);
    expect((await post("ro-1")).headers["idempotent-replayed"]).toBe("true");
    expect(upstream.calls).toHaveLength(2);
    // The write that succeeded clears the refusal /readyz showed.
    expect((await ready()).status).toBe(200);
    expect(redis.owned).toBe(true);
  });
});
