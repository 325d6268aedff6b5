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
import { until } from "../helpers/redis.js";
import { redisModelFixture } from "../helpers/redis-model.js";
import { startRedisSentinel, type TestRedisSentinel } from "../helpers/redis-sentinel.js";
import { runStateMachine } from "../helpers/state-model.js";
import { describeStoreContract } from "../helpers/store-contract.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { startCountingUpstream } from "../helpers/upstream.js";

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
  () => `{ sentinel: { nodes: ["${sentinel.sentinels[0]}"], name: ${sentinel.name} }, prefix: "multi:" }`,
  { keys: 200, copies: 10, keysAtOnce: 50 },
);

describe("a sentinel failover", () => {
  it("is followed: completed keys replay from the new primary, new keys execute once", async () => {
    const store = use(sentinelStore("failover:", { replicas: 1, replicaTimeout: 500 }));
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
    await until(() => post("probe").then((r) => r.status === 201), 30_000, "store on the new primary");

    const replays = await Promise.all(before.map(post));
    expect(replays.map((r) => r.headers["idempotent-replayed"])).toEqual(before.map(() => "true"));
    const after = Array.from({ length: 20 }, (_, i) => `after-${i}`);
    await Promise.all(after.map(post));
    await Promise.all(after.map(post));
    expect([...upstream.executions.values()].every((n) => n === 1)).toBe(true);
    expect(upstream.executions.size).toBe(41);
  }, 90_000);
});
