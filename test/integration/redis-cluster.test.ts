/**
 * The Redis store on a Redis Cluster of 3 primaries and 3 replicas, started once for the file: the
 * store contract, the state-machine model, three gateways in a storm, the attempt log, and a failover
 * in the middle of a storm with and without store.redis.replicas.
 */
import calculateSlot from "cluster-key-slot";
import { Cluster } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisStore } from "../../src/store/redis.js";
import { startTestGateway } from "../helpers/gateway.js";
import { describeThreeGatewayStorm } from "../helpers/gateway-storm.js";
import { send } from "../helpers/http.js";
import { until } from "../helpers/redis.js";
import { startRedisCluster, type TestRedisCluster } from "../helpers/redis-cluster.js";
import { redisModelFixture } from "../helpers/redis-model.js";
import { runStateMachine } from "../helpers/state-model.js";
import { describeStoreContract } from "../helpers/store-contract.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { startCountingUpstream, startUpstream } from "../helpers/upstream.js";

let cluster: TestRedisCluster;
beforeAll(async () => {
  cluster = await startRedisCluster();
}, 60_000);
afterAll(async () => {
  await cluster?.close();
});

const use = closeAfterEach();
const clusterStore = (prefix: string, extra: Partial<ConstructorParameters<typeof RedisStore>[0]> = {}) =>
  new RedisStore({ cluster: cluster.seeds, prefix, pollMs: 100, ...extra });

describeStoreContract("redis cluster", async () => {
  const store = clusterStore(`contract:${process.pid}:`);
  expect(await store.connect()).toBe(true);
  return {
    store,
    advance: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    cleanup: () => store.close(),
  };
});

describe("redis cluster", () => {
  it("holds the state machine's invariants", async () => {
    const store = use(clusterStore("model:", { pollMs: 20 }));
    await store.connect();
    const admin = new Cluster(
      cluster.seeds.map((s) => ({ host: "127.0.0.1", port: Number(s.split(":")[1]) })),
    );
    use({ close: async () => admin.disconnect() });
    await runStateMachine(redisModelFixture(store, admin, "model:"), 150, "redis cluster");
  }, 120_000);

  it("wakes waiting duplicates through sharded pub/sub and keeps an attempt log without CROSSSLOT", async () => {
    const store = clusterStore("log:", { pollMs: 60_000 });
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const upstream = use(
      await startUpstream(async (call, res) => {
        if (call.url === "/slow") await held;
        res.end(`done ${call.url}`);
      }),
    );
    await store.connect();
    const gateway = use(await startTestGateway({ upstream: upstream.url, store: { kind: "redis" } }, store));
    const post = (path: string, key: string) =>
      send(`${gateway.url}${path}`, { headers: { "idempotency-key": key }, body: "{}" });
    // The duplicate's fallback poll is a minute away: only the completion message can wake it in time.
    const first = post("/slow", "slow-1");
    await upstream.called(1);
    const duplicate = post("/slow", "slow-1");
    await expect.poll(() => gateway.engine.waitingDuplicates).toBe(1);
    release();
    expect((await first).status).toBe(200);
    expect((await duplicate).headers["idempotent-replayed"]).toBe("true");

    const keys = Array.from({ length: 30 }, (_, i) => `log-${i}`);
    await Promise.all(keys.map((k) => post("/x", k)));
    await Promise.all(keys.map((k) => post("/x", k)));
    await gateway.flushAttempts();
    const recent = await store.recentAttempts({ limit: 1000 });
    expect(recent).toHaveLength(62);
    expect(recent.filter((e) => e.outcome === "replayed")).toHaveLength(30);
    // Spread over the cluster, not one hot key.
    const owners = new Set(
      await Promise.all(
        Array.from({ length: 8 }, (_, i) => cluster.primaryOf(calculateSlot(`log:attempts{${i}}`))),
      ),
    );
    expect(owners.size).toBeGreaterThan(1);
  });
});

describeThreeGatewayStorm(
  "a Redis Cluster",
  () =>
    `{ kind: redis, redis: { cluster: [${cluster.seeds.map((s) => `"${s}"`).join(", ")}], prefix: "multi:" } }`,
  {
    keys: 200,
    copies: 10,
    keysAtOnce: 50,
  },
);

/** A key name whose hash slot is `slot`: the store keeps key K under the hash tag {K}. */
function keyInSlot(slot: number): string {
  for (let i = 0; ; i++) if (calculateSlot(`probe-${i}`) === slot) return `probe-${i}`;
}

/**
 * Kills the primary that owns `slot` in the middle of a storm, after its replica fell behind, and
 * lets the replica take over. Falling behind is made certain: the replica is stopped (SIGSTOP) and its
 * link cut, so nothing the primary takes from then on reaches it (on loopback, replication is
 * otherwise too quick to lose anything). Then every caller retries until answered.
 */
async function failoverStorm(slot: number, replicas: number) {
  const store = use(clusterStore(`failover-${slot}:`, { replicas, replicaTimeout: 100, pollMs: 200 }));
  await store.connect();
  const upstream = use(await startCountingUpstream(5));
  const gateway = use(await startTestGateway({ upstream: upstream.url, store: { kind: "redis" } }, store));
  const post = (key: string) =>
    send(`${gateway.url}/invoices`, { headers: { "idempotency-key": key }, body: "{}" });
  const keys = Array.from({ length: 60 }, (_, i) => `inv-${slot}-${i}`);

  const primary = await cluster.primaryOf(slot);
  const [replica] = await cluster.replicasOf(primary);
  if (replica === undefined) throw new Error(`primary ${primary} has no replica`);
  cluster.pause(replica);
  await cluster.cutReplication(primary);
  // The storm: three concurrent copies of every key while the replica hears nothing.
  const during = (await Promise.all(keys.flatMap((k) => Array.from({ length: 3 }, () => post(k))))).map(
    (r) => r.status,
  );
  await cluster.kill(primary);
  cluster.resume(replica);
  await cluster.settled(slot, replica);
  await cluster.restart(primary);
  // Back to one replica per shard, and the gateway's client routing to the new primary.
  await until(async () => (await cluster.replicasOf(replica)).length > 0, 30_000, "old primary rejoined");
  const probe = keyInSlot(slot);
  await until(
    () =>
      store.get(probe).then(
        () => true,
        () => false,
      ),
    30_000,
    "store routes to the new primary",
  );
  // Every caller retries until it gets its answer, as a robot whose first tries timed out would.
  const final = new Map<string, number>();
  for (const key of keys) {
    for (let attempt = 0; attempt < 20 && final.get(key) !== 201; attempt++)
      final.set(key, (await post(key)).status);
  }
  const executions = [...upstream.executions.values()];
  return {
    during,
    final: [...final.values()],
    executions: executions.reduce((a, b) => a + b, 0),
    duplicates: executions.reduce((a, n) => a + Math.max(0, n - 1), 0),
  };
}

describe("a failover in the middle of a storm", () => {
  it("without store.redis.replicas, loses what only the old primary held: those keys execute again", async () => {
    const run = await failoverStorm(0, 0);
    console.info(
      `failover, replicas: 0 -> ${run.executions} executions for 60 keys, ${run.duplicates} duplicates`,
    );
    expect(run.final).toEqual(Array(60).fill(201));
    expect(run.duplicates).toBeGreaterThan(0);
  }, 90_000);

  it("with store.redis.replicas: 1, executes every key once: a begin no replica confirmed is refused", async () => {
    const run = await failoverStorm(16383, 1);
    console.info(
      `failover, replicas: 1 -> ${run.executions} executions for 60 keys, ${run.duplicates} duplicates`,
    );
    expect(run.during).toContain(503);
    expect(run.final).toEqual(Array(60).fill(201));
    expect(run.executions).toBe(60);
    expect(run.duplicates).toBe(0);
  }, 90_000);
});
