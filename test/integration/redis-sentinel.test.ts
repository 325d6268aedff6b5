/**
 * The Redis store on a primary and a replica watched by Redis Sentinel, started once for the file:
 * the store contract, the state-machine model, three gateways in a storm, and a failover that the
 * store follows to the new primary.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisStore } from "../../src/store/redis.js";
import { startTestGateway } from "../helpers/gateway.js";
import { describeThreeGatewayStorm } from "../helpers/gateway-storm.js";
import { send } from "../helpers/http.js";
import { ask, until } from "../helpers/redis.js";
import { redisModelFixture } from "../helpers/redis-model.js";
import { startRedisSentinel, type TestRedisSentinel } from "../helpers/redis-sentinel.js";
import { runStateMachine } from "../helpers/state-model.js";
import { describeStoreContract } from "../helpers/store-contract.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { startCountingUpstream, startUpstream } from "../helpers/upstream.js";

let sentinel: TestRedisSentinel;
beforeAll(async () => {
  sentinel = await startRedisSentinel();
}, 60_000);
afterAll(async () => {
  await sentinel?.close();
});

const use = closeAfterEach();
const sentinelStore = (prefix: string, extra: Partial<ConstructorParameters<typeof RedisStore>[0]> = {}) =>
  new RedisStore({
    sentinel: { nodes: sentinel.sentinels, name: sentinel.name },
    prefix,
    pollMs: 100,
    ...extra,
  });

describeStoreContract("redis sentinel", async () => {
  const store = sentinelStore(`contract:${process.pid}:`);
  expect(await store.connect()).toBe(true);
  return {
    store,
    advance: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    cleanup: () => store.close(),
  };
});

describe("redis sentinel", () => {
  it("holds the state machine's invariants", async () => {
    const store = use(sentinelStore("model:", { pollMs: 20 }));
    await store.connect();
    const admin = new Redis({ port: await sentinel.primary(), host: "127.0.0.1" });
    use({ close: async () => admin.disconnect() });
    await runStateMachine(redisModelFixture(store, admin, "model:"), 150, "redis sentinel");
  }, 120_000);
});

describeThreeGatewayStorm(
  "Redis with Sentinel",
  () =>
    `{ kind: redis, redis: { sentinel: { nodes: ["${sentinel.sentinels[0]}"], name: ${sentinel.name} }, prefix: "multi:" } }`,
  { keys: 200, copies: 10, keysAtOnce: 50 },
);

describe("store.redis.replicas", () => {
  it("forwards only once the replica holds the begin, and answers only once it holds the answer", async () => {
    const replicaPort = await sentinel.replica();
    const replica = new Redis({ port: replicaPort, host: "127.0.0.1" });
    const primary = new Redis({ port: await sentinel.primary(), host: "127.0.0.1" });
    use({
      close: async () => {
        replica.disconnect();
        primary.disconnect();
      },
    });
    const store = use(sentinelStore("durable:", { replicas: 1, replicaTimeout: 20_000 }));
    await store.connect();
    const upstream = use(await startUpstream());
    const gateway = use(await startTestGateway({ upstream: upstream.url, store: { kind: "redis" } }, store));
    // A stopped replica confirms nothing: the gateway must sit in WAIT, the backend untouched.
    const waiting = async () => /cmd=wait/.test(String(await primary.client("LIST")));
    sentinel.pause(replicaPort);
    const reply = send(`${gateway.url}/invoices`, { headers: { "idempotency-key": "k-1" }, body: "{}" });
    try {
      await until(waiting, 10_000, "begin waiting for the replica");
      expect(upstream.calls).toHaveLength(0);
    } finally {
      sentinel.resume(replicaPort);
    }
    expect((await reply).status).toBe(200);
    expect(upstream.calls).toHaveLength(1);
    const [record] = await replica.keys("durable:*:r");
    expect(await replica.hget(record as string, "state")).toBe("completed");
  });

  it("refuses a begin the replica does not confirm in time, and forwards nothing", async () => {
    const upstream = use(await startUpstream());
    // Made from the config, as serve makes it, so that the metric is wired as in production.
    const redis = {
      sentinel: { nodes: sentinel.sentinels, name: sentinel.name },
      prefix: "shortfall:",
      replicas: 2,
      replicaTimeout: "50ms",
    };
    const gateway = use(await startTestGateway({ upstream: upstream.url, store: { kind: "redis", redis } }));
    const reply = await send(`${gateway.url}/invoices`, {
      headers: { "idempotency-key": "k-2" },
      body: "{}",
    });
    expect(reply.status).toBe(503);
    expect(JSON.parse(reply.body.toString())).toMatchObject({ code: "STORE_UNAVAILABLE", retryable: true });
    expect(JSON.parse(reply.body.toString()).detail).toMatch(/1 of 2 replica/);
    expect(upstream.calls).toHaveLength(0);
    const metrics = await fetch(`${gateway.adminUrl}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/store_replica_shortfalls_total\{step="begin"\} 1/);
    const ready = (await fetch(`${gateway.adminUrl}/readyz`).then((r) => r.json())) as {
      store: { warnings: string[] };
    };
    expect(ready.store.warnings.join("\n")).toMatch(/replicas is 2 but 1 replica/);
  });
});

describe("a sentinel failover", () => {
  it("is followed: completed keys replay from the new primary, new keys execute once", async () => {
    const store = use(sentinelStore("failover:"));
    await store.connect();
    const upstream = use(await startCountingUpstream(1));
    const gateway = use(await startTestGateway({ upstream: upstream.url, store: { kind: "redis" } }, store));
    const post = (key: string) =>
      send(`${gateway.url}/invoices`, { headers: { "idempotency-key": key }, body: "{}" });
    const before = Array.from({ length: 20 }, (_, i) => `before-${i}`);
    expect((await Promise.all(before.map(post))).map((r) => r.status)).toEqual(before.map(() => 201));

    const old = await sentinel.primary();
    const now = await sentinel.failover();
    expect(now).not.toBe(old);
    // The store finds the new primary (asked of the sentinel) at its next command, or on +switch-master.
    // Until the sentinel demotes it, the old primary still takes writes: a probe counts only once its
    // record is on the new one, else the replays below could race that demotion (READONLY, 503).
    let probes = 0;
    await until(
      async () => {
        const size = await ask(now, (r) => r.dbsize());
        if ((await post(`probe-${probes}`)).status !== 201) return false;
        probes++;
        return (await ask(now, (r) => r.dbsize())) > size;
      },
      30_000,
      "store on the new primary",
    );

    const replays = await Promise.all(before.map(post));
    expect(replays.map((r) => r.headers["idempotent-replayed"])).toEqual(before.map(() => "true"));
    const after = Array.from({ length: 20 }, (_, i) => `after-${i}`);
    await Promise.all(after.map(post));
    await Promise.all(after.map(post));
    expect([...upstream.executions.values()].every((n) => n === 1)).toBe(true);
    expect(upstream.executions.size).toBe(40 + probes);
  }, 90_000);
});
