/**
 * The RPA story at its edges: a backend that commits and then fails, robots that retry at once or
 * mint a key per attempt, and answers a robot can act on (one shape, retry guidance, request ids).
 * Black-box: a real gateway in front of a real backend, over real sockets.
 */
import { describe, expect, it } from "vitest";
import { startDemoBackend } from "../../src/demo/index.js";
import { startTestGateway, testConfig } from "../helpers/gateway.js";
import { send } from "../helpers/http.js";
import { invoice, invoiceRoute, reconcile } from "../helpers/invoices.js";
import { closeAfterEach } from "../helpers/teardown.js";
import { gate, startUpstream } from "../helpers/upstream.js";

const use = closeAfterEach();

describe("commit, then an error status", () => {
  it("a 500 after a commit leaves the key unknown under the defaults: the retry is not executed", async () => {
    const backend = use(await startDemoBackend({ port: 0, failAfterCommit: 1, failMode: "500" }));
    const gateway = use(await startTestGateway({ upstream: backend.url, routes: [invoiceRoute()] }));
    const url = `${gateway.url}/invoices`;
    const first = await send(url, invoice("INV-500"));
    expect(first.status).toBe(500);
    const retry = await send(url, invoice("INV-500"));
    expect(retry.status).toBe(409);
    expect(retry.json()).toMatchObject({ code: "OUTCOME_UNKNOWN", retryable: false });
    expect(backend.stats().executions).toBe(1);
  });

  for (const status of [502, 504]) {
    it(`${status} is an unknown outcome too`, async () => {
      let executions = 0;
      const upstream = use(
        await startUpstream((_call, res) => {
          executions++;
          res.writeHead(status, { "content-type": "text/plain" });
          res.end("bad gateway somewhere behind");
        }),
      );
      const gateway = use(await startTestGateway({ upstream: upstream.url }));
      const headers = { "idempotency-key": `k-${status}` };
      expect((await send(`${gateway.url}/pay`, { headers, body: "{}" })).status).toBe(status);
      expect((await send(`${gateway.url}/pay`, { headers, body: "{}" })).status).toBe(409);
      expect(executions).toBe(1);
    });
  }

  it("with reconcile, the retry after a 500 gets the committed invoice", async () => {
    const backend = use(await startDemoBackend({ port: 0, failAfterCommit: 1, failMode: "500" }));
    const gateway = use(
      await startTestGateway({
        upstream: backend.url,
        routes: [invoiceRoute({ onUnknown: "reconcile", reconcile })],
      }),
    );
    const url = `${gateway.url}/invoices`;
    expect((await send(url, invoice("INV-R500"))).status).toBe(500);
    const retry = await send(url, invoice("INV-R500"));
    expect(retry.status).toBe(200);
    expect(retry.headers["idempotent-replayed"]).toBe("reconciled");
    expect(backend.stats().executions).toBe(1);
  });

  it("unknownOn is configurable: a status left out releases the key, as a 503 does by default", async () => {
    let executions = 0;
    const upstream = use(
      await startUpstream((_call, res) => {
        executions++;
        res.writeHead(executions === 1 ? 503 : 201, { "content-type": "application/json" });
        res.end(JSON.stringify({ n: executions }));
      }),
    );
    const gateway = use(await startTestGateway({ upstream: upstream.url }));
    const headers = { "idempotency-key": "k-503" };
    expect((await send(`${gateway.url}/pay`, { headers, body: "{}" })).status).toBe(503);
    expect((await send(`${gateway.url}/pay`, { headers, body: "{}" })).status).toBe(201);
    expect(executions).toBe(2);
  });
});

describe("retry guidance", () => {
  it("OUTCOME_UNKNOWN under reject says retryable: false and sends no Retry-After", async () => {
    const backend = use(await startDemoBackend({ port: 0, failAfterCommit: 1, failMode: "drop" }));
    const gateway = use(await startTestGateway({ upstream: backend.url, routes: [invoiceRoute()] }));
    const url = `${gateway.url}/invoices`;
    const first = await send(url, invoice("INV-G"));
    expect(first.status).toBe(504);
    expect(first.json()).toMatchObject({ code: "UPSTREAM_OUTCOME_UNKNOWN", retryable: false });
    const retry = await send(url, invoice("INV-G"));
    expect(retry.status).toBe(409);
    expect(retry.headers["retry-after"]).toBeUndefined();
    expect(retry.json()).toMatchObject({ code: "OUTCOME_UNKNOWN", retryable: false });
  });

  it("IN_FLIGHT says retryable: true with Retry-After; a 400 says retryable: false", async () => {
    const release = gate();
    const upstream = use(
      await startUpstream(async (_call, res) => {
        await release.promise;
        res.end("done");
      }),
    );
    const gateway = use(
      await startTestGateway({
        upstream: upstream.url,
        routes: [invoiceRoute({ concurrent: "reject" })],
      }),
    );
    const url = `${gateway.url}/invoices`;
    const first = send(url, invoice("INV-F"));
    await upstream.called(1);
    const dup = await send(url, invoice("INV-F"));
    release.open();
    expect((await first).status).toBe(200);
    expect(dup.status).toBe(409);
    expect(dup.headers["retry-after"]).toBe("1");
    expect(dup.json()).toMatchObject({ code: "IN_FLIGHT", retryable: true, retryAfter: 1 });
    const bad = await send(url, { headers: { "content-type": "application/json" }, body: "{}" });
    expect(bad.status).toBe(400);
    expect(bad.json()).toMatchObject({ code: "MISSING_KEY", retryable: false });
  });
});

describe("request ids", () => {
  it("every answer carries X-Request-Id: first answers, replays, errors and pass-through", async () => {
    const upstream = use(
      await startUpstream((call, res) => {
        if (call.url !== "/pay") {
          // Says nothing of request ids: whatever the caller gets, the gateway added.
          res.end(call.url === "/big" ? "x".repeat(4096) : "ok");
          return;
        }
        // A backend that echoes the id it was sent: a replay must not repeat the first one's.
        res.writeHead(201, { "x-request-id": String(call.headers["x-request-id"]) });
        res.end("created");
      }),
    );
    const gateway = use(
      await startTestGateway({ upstream: upstream.url, defaults: { maxResponseSize: "1kb" } }),
    );
    const headers = (id: string) => ({ "idempotency-key": "k-rid", "x-request-id": id });
    const first = await send(`${gateway.url}/pay`, { headers: headers("robot-1"), body: "{}" });
    const replay = await send(`${gateway.url}/pay`, { headers: headers("robot-2"), body: "{}" });
    expect(first.headers["x-request-id"]).toBe("robot-1");
    expect(replay.headers["x-request-id"]).toBe("robot-2");
    expect(replay.body.toString()).toBe("created");
    const reused = await send(`${gateway.url}/pay`, { headers: headers("robot-3"), body: "{ }" });
    expect(reused.status).toBe(422);
    expect(reused.headers["x-request-id"]).toBe("robot-3");
    expect(reused.json()).toMatchObject({ code: "KEY_REUSED", requestId: "robot-3" });
    // An answer too large to store, streamed to its caller, carries it too.
    const large = await send(`${gateway.url}/big`, {
      headers: { "idempotency-key": "k-big", "x-request-id": "robot-4" },
      body: "{}",
    });
    expect(large.body.byteLength).toBe(4096);
    expect(large.headers["x-request-id"]).toBe("robot-4");
    const passed = await send(`${gateway.url}/status`, { method: "GET" });
    expect(passed.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
    expect(upstream.calls.at(-1)?.headers["x-request-id"]).toBe(passed.headers["x-request-id"]);
  });
});

describe("keys and fields on a business-key route", () => {
  const counting = () => {
    let n = 0;
    return startUpstream((call, res) => {
      res.writeHead(201, { "content-type": "application/json" });
      res.end(JSON.stringify({ n: ++n, key: call.headers["idempotency-key"] ?? null }));
    });
  };

  it("a fresh Idempotency-Key per retry does not make a new operation: the business key decides", async () => {
    const upstream = use(await counting());
    const gateway = use(await startTestGateway({ upstream: upstream.url, routes: [invoiceRoute()] }));
    const attempt = (n: number) =>
      send(`${gateway?.url}/invoices`, {
        headers: { ...invoice("INV-K").headers, "idempotency-key": `robot-attempt-${n}` },
        body: invoice("INV-K").body,
      });
    const first = await attempt(1);
    const second = await attempt(2);
    expect(first.status).toBe(201);
    expect(second.headers["idempotent-replayed"]).toBe("true");
    expect(second.body.equals(first.body)).toBe(true);
    expect(upstream.calls).toHaveLength(1);
  });

  it("naming the header on such a route opts in: a present header wins over key.from", async () => {
    const upstream = use(await counting());
    const gateway = use(
      await startTestGateway({
        upstream: upstream.url,
        routes: [invoiceRoute({ key: { header: "Idempotency-Key", from: ["body:/invoiceNumber"] } })],
      }),
    );
    const url = `${gateway.url}/invoices`;
    for (const k of ["a", "b"]) {
      const r = await send(url, {
        headers: { ...invoice("INV-H").headers, "idempotency-key": k },
        body: invoice("INV-H").body,
      });
      expect(r.status).toBe(201);
    }
    expect(upstream.calls).toHaveLength(2);
  });

  it("require: a missing field is a 400 naming it, nothing forwarded, no key taken", async () => {
    const upstream = use(await counting());
    const gateway = use(
      await startTestGateway({
        upstream: upstream.url,
        routes: [invoiceRoute({ require: ["body:/amount"] })],
      }),
    );
    const url = `${gateway.url}/invoices`;
    const headers = invoice("INV-Q").headers;
    const body = (amount?: number) =>
      JSON.stringify({ invoiceNumber: "INV-Q", transactionId: "T-1", ...(amount ? { amount } : {}) });
    const missing = await send(url, { headers, body: body() });
    expect(missing.status).toBe(400);
    expect(missing.json()).toMatchObject({ code: "MISSING_FIELD", source: "body:/amount", retryable: false });
    expect(upstream.calls).toHaveLength(0);
    // The refusal took no key: the complete request is executed, then replayed.
    expect((await send(url, { headers, body: body(10) })).status).toBe(201);
    expect(upstream.calls).toHaveLength(1);
  });

  it("operationIdHeader sends the stored key upstream, the same on every attempt of one operation", async () => {
    const upstream = use(await counting());
    const gateway = use(
      await startTestGateway({
        upstream: upstream.url,
        routes: [invoiceRoute({ operationIdHeader: "Idempotency-Key" })],
      }),
    );
    const url = `${gateway.url}/invoices`;
    const withKey = (k: string, n: string) => ({
      headers: { ...invoice(n).headers, "idempotency-key": k },
      body: invoice(n).body,
    });
    await send(url, withKey("client-1", "INV-O1"));
    await send(url, withKey("client-1", "INV-O2"));
    // Through a store loss the same operation would be sent again with the same id.
    await gateway.close();
    const restarted = use(
      await startTestGateway({
        upstream: upstream.url,
        routes: [invoiceRoute({ operationIdHeader: "Idempotency-Key" })],
      }),
    );
    await send(`${restarted.url}/invoices`, withKey("client-2", "INV-O1"));
    const ids = upstream.calls.map((c) => c.headers["idempotency-key"]);
    expect(ids[0]).toMatch(/^[\w-]{43}$/);
    expect(ids[1]).not.toBe(ids[0]);
    expect(ids[2]).toBe(ids[0]);
    expect(
      upstream.calls.every((c) => c.rawHeaders.filter((h) => /^idempotency-key$/i.test(h)).length === 1),
    ).toBe(true);
  });
});

describe("a reconciled replay in the original's shape", () => {
  it("reconcile.replay turns the probe's 200 list into the 201 object the original caller would have got", async () => {
    const backend = use(await startDemoBackend({ port: 0, failAfterCommit: 1, failMode: "drop" }));
    const gateway = use(
      await startTestGateway({
        upstream: backend.url,
        routes: [
          invoiceRoute({
            onUnknown: "reconcile",
            reconcile: { ...reconcile, replay: { status: 201, body: "/0" } },
          }),
        ],
      }),
    );
    const url = `${gateway.url}/invoices`;
    expect((await send(url, invoice("INV-SHAPE"))).status).toBe(504);
    const retry = await send(url, invoice("INV-SHAPE"));
    const again = await send(url, invoice("INV-SHAPE"));
    expect(retry.status).toBe(201);
    expect(retry.json()).toMatchObject({
      id: "INV-000001",
      invoiceNumber: "INV-SHAPE",
      transactionId: "T-1",
    });
    expect(again.status).toBe(201);
    expect(again.body.equals(retry.body)).toBe(true);
    expect(backend.stats().executions).toBe(1);
  });
});

describe("the route's error shape", () => {
  const shape = {
    template: {
      error: { code: "{code}", message: "{detail}", retryable: "{retryable}", status: "{status}" },
      requestId: "{requestId}",
      note: "gateway {code} for {requestId}",
    },
  };

  it("fills the template for every gateway error on the route, in the backend's content type", async () => {
    const upstream = use(
      await startUpstream((_call, res) => {
        res.end("{}");
      }),
    );
    const gateway = use(
      await startTestGateway({
        upstream: upstream.url,
        defaults: { errorBody: shape },
        routes: [invoiceRoute({ require: ["body:/amount"] })],
      }),
    );
    const url = `${gateway.url}/invoices`;
    const missing = await send(url, {
      headers: { ...invoice("INV-T").headers, "x-request-id": "r-1" },
      body: JSON.stringify({ invoiceNumber: "INV-T", transactionId: "T-1" }),
    });
    expect(missing.status).toBe(400);
    expect(missing.headers["content-type"]).toBe("application/json");
    expect(missing.json()).toEqual({
      error: { code: "MISSING_FIELD", message: "body:/amount is required", retryable: false, status: 400 },
      requestId: "r-1",
      note: "gateway MISSING_FIELD for r-1",
    });
    // Before any route is known (a path the gateway refuses), the defaults' shape applies.
    const badPath = await send(`${gateway.url}/invoices;x=1`, { headers: { "x-request-id": "r-2" } });
    expect(badPath.status).toBe(400);
    expect(badPath.json()).toMatchObject({
      error: { code: "INVALID_PATH", retryable: false },
      requestId: "r-2",
    });
  });

  it("refuses a template that names an unknown placeholder, naming where", () => {
    expect(() =>
      testConfig({
        upstream: "http://127.0.0.1:9",
        defaults: { errorBody: { template: { error: { message: "{detial}" } } } },
      }),
    ).toThrow("defaults.errorBody: error.message: unknown placeholder {detial}");
  });
});
