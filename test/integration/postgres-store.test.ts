/**
 * The store on PostgreSQL (store.kind: postgres), against a PostgreSQL the file starts itself: the
 * store contract, the state-machine model, round trips per path, three gateways in a storm, and a
 * restart of the database and of the gateway that loses no completed record.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PostgresStore } from "../../src/store/postgres.js";
import { startTestGateway } from "../helpers/gateway.js";
import { describeThreeGatewayStorm } from "../helpers/gateway-storm.js";
import { send } from "../helpers/http.js";
import { startPostgres, type TestPostgres } from "../helpers/postgres.js";
import { postgresModelFixture } from "../helpers/postgres-model.js";
import { runCli } from "../helpers/process.js";
import { until } from "../helpers/redis.js";
import { runStateMachine } from "../helpers/state-model.js";
import { describeStoreContract } from "../helpers/store-contract.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { startUpstream } from "../helpers/upstream.js";

let db: TestPostgres;
let sql: pg.Pool;
beforeAll(async () => {
  db = await startPostgres();
  sql = new pg.Pool({ connectionString: db.url, max: 2 });
  sql.on("error", () => {});
}, 60_000);
afterAll(async () => {
  await sql?.end();
  await db?.close();
});

const use = closeAfterEach();

describeStoreContract("postgres", async () => {
  const store = new PostgresStore({ url: db.url, pollMs: 100 });
  expect(await store.connect()).toBe(true);
  return {
    store,
    // Leases and TTLs run on the database's clock; there is nothing to fake.
    advance: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    cleanup: () => store.close(),
  };
});

describe("postgres store", () => {
  it("holds the state machine's invariants", async () => {
    const store = use(new PostgresStore({ url: db.url, pollMs: 20 }));
    await store.connect();
    await runStateMachine(postgresModelFixture(store, sql), 150, "postgres");
  }, 120_000);

  it("costs one round trip per replay and two per first attempt", async () => {
    const store = new PostgresStore({ url: db.url });
    await store.connect();
    const upstream = use(await startUpstream());
    const gateway = use(
      await startTestGateway(
        { upstream: upstream.url, store: { kind: "postgres" }, audit: { attempts: 0 } },
        store,
      ),
    );
    await send(`${gateway.url}/warm`, { headers: { "idempotency-key": "warm" }, body: "{}" });
    const before = store.roundTrips;
    await send(`${gateway.url}/pay`, { headers: { "idempotency-key": "rt-1" }, body: "{}" });
    const first = store.roundTrips - before;
    const replay = await send(`${gateway.url}/pay`, { headers: { "idempotency-key": "rt-1" }, body: "{}" });
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(first).toBe(2);
    expect(store.roundTrips - before - first).toBe(1);
  });

  // A row's ctid is the place of its newest version: in a table of its own, the n-th version written
  // is at (0,n). Every version written (and a lock taken with SELECT ... FOR UPDATE before an
  // UPDATE, which writes the row too) is work for the database on every first attempt.
  it("writes two versions of a row per first attempt: the in-flight row and the answer", async () => {
    await sql.query("DROP DATABASE IF EXISTS row_versions");
    await sql.query("CREATE DATABASE row_versions");
    const url = new URL(db.url);
    url.pathname = "/row_versions";
    const store = use(new PostgresStore({ url: url.href }));
    expect(await store.connect()).toBe(true);
    const times = { leaseMs: 30_000, ttlMs: 60_000, settleMs: 0 };
    const lease = { ...times, token: "t-1", fingerprint: "fp", takeOverUnknown: false };
    expect(await store.begin("versions", lease)).toMatchObject({ acquired: true, took: "fresh" });
    const answer = {
      status: 201,
      headers: [["content-type", "application/json"]] as const,
      body: Buffer.from("{}"),
    };
    expect(await store.complete("versions", "t-1", answer, 60_000)).toBe(true);
    const direct = new pg.Client({ connectionString: url.href });
    await direct.connect();
    try {
      const { rows } = await direct.query("SELECT ctid::text AS at, state FROM idempotency_records");
      expect(rows).toEqual([{ at: "(0,2)", state: "completed" }]);
    } finally {
      await direct.end();
    }
    expect((await store.get("versions"))?.state).toBe("completed");
  });

  it("keeps completed records through a crash of the database and a restart of the gateway", async () => {
    const upstream = use(await startUpstream());
    const config = { upstream: upstream.url, store: { kind: "postgres", postgres: { url: db.url } } };
    const gateway = await startTestGateway(config);
    const post = (url: string, key: string) =>
      send(`${url}/invoices`, { headers: { "idempotency-key": key }, body: "{}" });
    const keys = Array.from({ length: 20 }, (_, i) => `restart-${i}`);
    await Promise.all(keys.map((k) => post(gateway.url, k)));
    await db.kill();
    const during = await post(gateway.url, "during");
    expect(during.status).toBe(503);
    // An outage, not a refusal: failMode: open would forward it.
    expect(during.json().code).toBe("STORE_UNAVAILABLE");
    await gateway.close();
    await db.start();
    // A new gateway's worth of state: a new pool, nothing in memory.
    const again = use(await startTestGateway(config));
    const back = () =>
      again.store.ping().then(
        () => true,
        () => false,
      );
    await until(back, 30_000, "database back");
    const replays = await Promise.all(keys.map((k) => post(again.url, k)));
    expect(replays.map((r) => r.headers["idempotent-replayed"])).toEqual(keys.map(() => "true"));
    expect(upstream.calls).toHaveLength(20);
  }, 60_000);
});

describe("check-config --connect on a postgres store", () => {
  it("says reachable, or fails in one line", async () => {
    const dir = await mkdtemp(join(tmpdir(), "idem-pgcheck-"));
    use({ close: () => rm(dir, { recursive: true, force: true }) });
    const check = async (url: string) => {
      const config = join(dir, `${Math.random()}.yaml`);
      await writeFile(
        config,
        `upstream: { url: "http://127.0.0.1:1" }\nstore: { kind: postgres, postgres: { url: "${url}" } }\n`,
      );
      return runCli(["check-config", "--config", config, "--connect"]);
    };
    const ok = await check(db.url);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain("store: postgres: reachable");
    const down = await check("postgres://postgres:secret-password@127.0.0.1:1/postgres");
    expect(down.code).toBe(2);
    expect(down.stderr.trim().split("\n")).toHaveLength(1);
    expect(down.stderr).toMatch(/^idempotency-gateway: store: cannot reach postgres: connect ECONNREFUSED/);
    expect(down.stderr).not.toContain("secret-password");
  });
});

describeThreeGatewayStorm("PostgreSQL", () => `{ kind: postgres, postgres: { url: "${db.url}" } }`, {
  keys: 200,
  copies: 10,
  keysAtOnce: 50,
});
