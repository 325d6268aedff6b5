import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDemoBackend } from "../../src/demo/index.js";
import type { RunningGateway } from "../../src/gateway/index.js";
import { RecordState } from "../../src/store/index.js";
import { RedisStore } from "../../src/store/redis.js";
import { startTestGateway } from "../helpers/gateway.js";
import { send } from "../helpers/http.js";
import { invoice, invoiceRoute, nextCommit, reconcile } from "../helpers/invoices.js";
import { startRedis, type TestRedis } from "../helpers/redis.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { startUpstream } from "../helpers/upstream.js";

const use = closeAfterEach();

describe("unknown outcomes", () => {
  it("the 31 s story: the client gives up, the backend commits later, the retry gets that commit", async () => {
    // Scaled down: client timeout 200 ms < backend commit after 600 ms < gateway upstream timeout 10 s.
    const backend = use(await startDemoBackend({ port: 0, stallRate: 1, stallMs: 600 }));
    const gateway = use(
      await startTestGateway({
        upstream: { url: backend.url, timeout: "10s" },
        routes: [invoiceRoute()],
      }),
    );
    const url = `${gateway.url}/invoices`;
    const first = await send(url, { ...invoice("INV-31"), signal: AbortSignal.timeout(200) }).catch(
      (e: Error) => e,
    );
    expect(first).toBeInstanceOf(Error);
    const retry = await send(url, invoice("INV-31"));
    expect(retry.status).toBe(201);
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    expect(retry.json()).toMatchObject({ invoiceNumber: "INV-31" });
    expect(backend.stats().executions).toBe(1);
  });

  it("an upstream that resets the connection after reading the request leaves the key unknown (504, then 409)", async () => {
    const upstream = use(
      await startUpstream((_call, res) => {
        res.socket?.destroy();
      }),
    );
    const gateway = use(await startTestGateway({ upstream: upstream.url }));
    const headers = { "idempotency-key": "reset-1" };
    const first = await send(`${gateway.url}/pay`, { headers, body: "{}" });
    const retry = await send(`${gateway.url}/pay`, { headers, body: "{}" });
    expect(first.status).toBe(504);
    expect(first.json()).toMatchObject({ code: "UPSTREAM_OUTCOME_UNKNOWN", state: "unknown" });
    expect(retry.status).toBe(409);
    expect(retry.json()).toMatchObject({ code: "OUTCOME_UNKNOWN" });
    expect(upstream.calls).toHaveLength(1);
  });

  it("reconcile: the probe finds the committed invoice, which is stored and replayed as reconciled", async () => {
    const commit = nextCommit();
    // undici measures upstream timeouts with a resolution of about a second: leave a wide gap.
    const backend = use(
      await startDemoBackend({
        port: 0,
        stallRate: 1,
        stallMs: 2_500,
        onCommit: (i) => commit.hook(i),
      }),
    );
    const gateway = use(
      await startTestGateway({
        upstream: { url: backend.url, timeout: "200ms" },
        routes: [invoiceRoute({ onUnknown: "reconcile", reconcile })],
      }),
    );
    const url = `${gateway.url}/invoices`;
    const first = await send(url, invoice("INV-R1"));
    expect(first.status).toBe(504);
    await commit.committed;
    const retry = await send(url, invoice("INV-R1"));
    const again = await send(url, invoice("INV-R1"));
    expect(retry.status).toBe(200);
    expect(retry.headers["idempotent-replayed"]).toBe("reconciled");
    expect(retry.json()).toMatchObject([{ invoiceNumber: "INV-R1" }]);
    expect(again.headers["idempotent-replayed"]).toBe("reconciled");
    expect(again.body.equals(retry.body)).toBe(true);
    expect(backend.stats().executions).toBe(1);
  });

  it("reconcile: the probe finds nothing once the settle time has passed, so the original is forwarded again", async () => {
    let posts = 0;
    const upstream = use(
      await startUpstream((call, res) => {
        if (call.method === "GET") {
          res.writeHead(404);
          return void res.end();
        }
        posts++;
        if (posts === 1) return; // the first POST never answers and never commits
        res.writeHead(201);
        res.end("created on the second try");
      }),
    );
    const gateway = use(
      await startTestGateway({
        upstream: { url: upstream.url, timeout: "150ms" },
        routes: [invoiceRoute({ onUnknown: "reconcile", reconcile: { ...reconcile, settle: "20ms" } })],
      }),
    );
    const url = `${gateway.url}/invoices`;
    expect((await send(url, invoice("INV-R2"))).status).toBe(504);
    await settled(gateway);
    const retry = await send(url, invoice("INV-R2"));
    expect(retry.status).toBe(201);
    expect(retry.body.toString()).toBe("created on the second try");
    expect(retry.headers["idempotent-replayed"]).toBeUndefined();
    const probe = upstream.calls.find((c) => c.method === "GET");
    expect(probe?.url).toBe("/invoices?number=INV-R2&transactionId=T-1");
    expect(probe?.headers["x-tenant-id"]).toBe("acme");
    expect(posts).toBe(2);
  });

  it("reconcile: a probe that fails leaves the key unknown (409), and nothing is forwarded", async () => {
    let posts = 0;
    const upstream = use(
      await startUpstream((call, res) => {
        if (call.method === "GET") {
          res.writeHead(500);
          return void res.end();
        }
        posts++;
      }),
    );
    const gateway = use(
      await startTestGateway({
        upstream: { url: upstream.url, timeout: "150ms" },
        routes: [invoiceRoute({ onUnknown: "reconcile", reconcile })],
      }),
    );
    const url = `${gateway.url}/invoices`;
    expect((await send(url, invoice("INV-R3"))).status).toBe(504);
    const retry = await send(url, invoice("INV-R3"));
    const again = await send(url, invoice("INV-R3"));
    expect(retry.status).toBe(409);
    expect(retry.json()).toMatchObject({ code: "OUTCOME_UNKNOWN" });
    expect(String(retry.json().detail)).toContain("probe answered 500");
    expect(again.status).toBe(409);
    expect(posts).toBe(1);
  });
});

describe("store outage", () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.close();
  });

  async function redisGateway(failMode: "closed" | "open") {
    const upstream = use(await startUpstream());
    const store = new RedisStore({ url: redis.url, prefix: `outage-${failMode}:`, commandTimeoutMs: 500 });
    await store.connect();
    const gateway = use(
      await startTestGateway({ upstream: upstream.url, store: { kind: "redis", failMode } }, store),
    );
    return { up: upstream, gw: gateway };
  }

  it("failMode closed: 503 + Retry-After while Redis is down, and recovery without a restart", async () => {
    const { up, gw } = await redisGateway("closed");
    const headers = { "idempotency-key": "outage-1" };
    expect((await send(`${gw.url}/pay`, { headers, body: "{}" })).status).toBe(200);
    expect((await send(`${gw.adminUrl}/readyz`, { method: "GET" })).status).toBe(200);
    await redis.stop();
    const down = await send(`${gw.url}/pay`, { headers: { "idempotency-key": "outage-2" }, body: "{}" });
    expect(down.status).toBe(503);
    expect(down.headers["retry-after"]).toBe("5");
    expect(down.json()).toMatchObject({ code: "STORE_UNAVAILABLE" });
    const ready = await send(`${gw.adminUrl}/readyz`, { method: "GET" });
    expect(ready.status).toBe(503);
    expect(ready.json()).toMatchObject({
      status: "store unreachable",
      store: { kind: "redis", reachable: false },
    });
    expect(up.calls).toHaveLength(1);
    await redis.start();
    // Reconnection is the client's own; wait for readiness to say so, then use the gateway again.
    await waitReady(`${gw.adminUrl}/readyz`);
    const after = await send(`${gw.url}/pay`, { headers: { "idempotency-key": "outage-2" }, body: "{}" });
    expect(after.status).toBe(200);
    expect(up.calls).toHaveLength(2);
  });

  it("failMode open: forwards unprotected while Redis is down, and counts each such request", async () => {
    const { up, gw } = await redisGateway("open");
    await redis.stop();
    const headers = { "idempotency-key": "open-1" };
    const a = await send(`${gw.url}/pay`, { headers, body: "{}" });
    const b = await send(`${gw.url}/pay`, { headers, body: "{}" });
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(up.calls).toHaveLength(2);
    expect(gw.unprotectedForwards()).toBe(2);
    expect((await send(`${gw.adminUrl}/readyz`, { method: "GET" })).json()).toMatchObject({
      unprotectedForwards: 2,
    });
    await redis.start();
    await waitReady(`${gw.adminUrl}/readyz`);
  });
});

/** Resolves once the newest key in the attempt log is unknown and past its settle time. */
async function settled(gw: RunningGateway): Promise<void> {
  await gw.flushAttempts();
  const [entry] = await gw.store.recentAttempts({ limit: 1 });
  for (;;) {
    const record = await gw.store.get(entry?.storeKey as string);
    if (record?.state !== RecordState.Unknown) throw new Error(`expected unknown, got ${record?.state}`);
    if (record.settlesInMs === 0) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Reconnection happens on the client's own schedule; readiness is the event to wait for. */
async function waitReady(url: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const res = await send(url, { method: "GET" });
    if (res.status === 200) return;
    if (Date.now() > deadline) throw new Error("the gateway did not become ready again");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
