/**
 * The gateway as a hostile caller meets it: real gateway, real backend, real sockets. Each block is
 * one class of attack from the security model in the README; each test fails on a gateway without
 * the defence it names.
 */
import { readFile } from "node:fs/promises";
import { connect } from "node:net";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { parseConfigText } from "../../src/config/index.js";
import { type RunningGateway, startGateway } from "../../src/gateway/index.js";
import { MemoryStore } from "../../src/store/index.js";
import { startTestGateway, type TestConfig, testConfig } from "../helpers/gateway.js";
import { send } from "../helpers/http.js";
import { rawHttp, rawRequest } from "../helpers/raw.js";
import { loseReplies } from "../helpers/store-faults.js";
import { gate, startUpstream, type TestUpstream, type UpstreamHandler } from "../helpers/upstream.js";

let upstream: TestUpstream | undefined;
let gateway: RunningGateway | undefined;
afterEach(async () => {
  await gateway?.close();
  await upstream?.close();
  gateway = undefined;
  upstream = undefined;
});

/** A backend that creates a new invoice on every call, whatever the path's spelling (as lenient legacy servers do). */
const createsInvoices: UpstreamHandler = (call, res) => {
  res.writeHead(201, {
    "content-type": "application/json",
    "set-cookie": `session=${call.url.length}-${Math.random()}`,
  });
  res.end(JSON.stringify({ id: `inv-${Math.random().toString(36).slice(2)}`, path: call.url }));
};

async function start(config: Omit<TestConfig, "upstream">, handler: UpstreamHandler = createsInvoices) {
  upstream = await startUpstream(handler);
  gateway = await startTestGateway({ upstream: upstream.url, ...config });
  return { gateway, upstream };
}

const invoiceBody = (n = "INV-1", extra: Record<string, unknown> = {}) =>
  JSON.stringify({ invoiceNumber: n, transactionId: "T-1", amount: 10, ...extra });

const invoiceRoute = {
  name: "create-invoice",
  match: { method: "POST", path: "/invoices" },
  key: { from: ["body:/invoiceNumber", "body:/transactionId"], required: true },
  fingerprint: ["body"],
};

describe("paths cannot be spelled past a route", () => {
  const spellings = [
    "/./invoices",
    "/x/../invoices",
    "//invoices",
    "/invoices#x",
    "/%69nvoices",
    "/invoices/",
    "/INVOICES",
    "/x/%2e%2e/invoices",
    "http://gateway.test/invoices",
  ];
  it.each(spellings)("%s is the protected route, forwarded as /invoices", async (target) => {
    const { gateway, upstream } = await start({ routes: [invoiceRoute] });
    const json = { "content-type": "application/json" };
    const first = await rawRequest(gateway.url, rawHttp("POST", "/invoices", json, invoiceBody()));
    expect(first.status).toBe(201);
    const again = await rawRequest(gateway.url, rawHttp("POST", target, json, invoiceBody()));
    expect(again.status).toBe(201);
    expect(again.headers).toContainEqual(["idempotent-replayed", "true"]);
    expect(again.body.equals(first.body)).toBe(true);
    expect(upstream.calls).toHaveLength(1);
  });

  it("a required key field is enforced whatever the spelling", async () => {
    const { gateway, upstream } = await start({ routes: [invoiceRoute] });
    const reply = await rawRequest(
      gateway.url,
      rawHttp("POST", "/a/../INVOICES/", { "content-type": "application/json" }, "{}"),
    );
    expect(reply.status).toBe(400);
    expect(JSON.parse(reply.body.toString())).toMatchObject({ code: "MISSING_KEY" });
    expect(upstream.calls).toHaveLength(0);
  });

  it("the backend gets the normalized path, with the query as sent", async () => {
    const { gateway, upstream } = await start({ routes: [] });
    await rawRequest(gateway.url, rawHttp("GET", "/a/./b/../c//%7Ed%2f?x=%2e&y=1"));
    expect(upstream.calls[0]?.url).toBe("/a/c/~d%2F?x=%2e&y=1");
  });

  it.each([
    ["/invoices;jsessionid=1", "path parameters"],
    ["/in%zzvoices", "malformed"],
  ])("%s is refused with 400 and never forwarded", async (target, reason) => {
    const { gateway, upstream } = await start({ routes: [invoiceRoute] });
    const reply = await rawRequest(gateway.url, rawHttp("POST", target, {}, invoiceBody()));
    expect(reply.status).toBe(400);
    const problem = JSON.parse(reply.body.toString());
    expect(problem).toMatchObject({ code: "INVALID_PATH" });
    expect(problem.detail).toContain(reason);
    expect(upstream.calls).toHaveLength(0);
  });

  it.each([
    ["a header line without a colon", "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"],
    ["a control character in the target", "GET /\u0001 HTTP/1.1\r\nHost: x\r\n\r\n"],
    [
      "both Content-Length and Transfer-Encoding",
      "POST /invoices HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
  ])(
    "a request the HTTP parser refuses (%s) gets problem details with a request id",
    async (_what, bytes) => {
      const { gateway, upstream } = await start({ routes: [invoiceRoute] });
      const reply = await rawRequest(gateway.url, bytes);
      expect(reply.status).toBe(400);
      expect(Object.fromEntries(reply.headers)).toMatchObject({
        "content-type": "application/problem+json",
        connection: "close",
      });
      const problem = JSON.parse(reply.body.toString());
      expect(problem).toMatchObject({ code: "MALFORMED_REQUEST", status: 400, retryable: false });
      expect(problem.detail).toMatch(/^the request cannot be read as HTTP\/1\.1: /);
      expect(problem.requestId).toBe(Object.fromEntries(reply.headers)["x-request-id"]);
      expect(problem.requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(upstream.calls).toHaveLength(0);
    },
  );

  it("unmatched: reject answers 404 for a path no route names", async () => {
    const { gateway, upstream } = await start({ unmatched: "reject", routes: [invoiceRoute] });
    const other = await send(`${gateway.url}/other`, { method: "GET" });
    expect(other.status).toBe(404);
    expect(other.json()).toMatchObject({ code: "NO_ROUTE" });
    expect(upstream.calls).toHaveLength(0);
  });
});

/** The shipped config/gateway.yaml, in front of the given backend. */
async function startShipped(handler: UpstreamHandler = createsInvoices) {
  upstream = await startUpstream(handler);
  const file = fileURLToPath(new URL("../../config/gateway.yaml", import.meta.url));
  const config = parseConfigText(await readFile(file, "utf8"), file, {
    port: 0,
    adminPort: 0,
    upstream: upstream.url,
  });
  gateway = await startGateway(config, { logger: pino({ level: "silent" }) });
  return { gateway, upstream };
}

describe("callers never see each other's answers", () => {
  const keyed = (auth: string, body = '{"amount":10}') => ({
    headers: { authorization: auth, "idempotency-key": "order-1", "content-type": "application/json" },
    body,
  });

  it("the same Idempotency-Key from another credential is another operation, on the shipped config", async () => {
    const { gateway, upstream } = await startShipped();
    const alice = await send(`${gateway.url}/orders`, keyed("Bearer alice"));
    const mallory = await send(`${gateway.url}/orders`, keyed("Bearer mallory"));
    expect(alice.status).toBe(201);
    expect(mallory.status).toBe(201);
    expect(mallory.headers["idempotent-replayed"]).toBeUndefined();
    expect(mallory.headers["set-cookie"]).not.toEqual(alice.headers["set-cookie"]);
    expect(mallory.body.equals(alice.body)).toBe(false);
    expect(upstream.calls).toHaveLength(2);
    // The owner still gets its own answer back.
    const again = await send(`${gateway.url}/orders`, keyed("Bearer alice"));
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(again.body.equals(alice.body)).toBe(true);
  });

  it("a key in use by another caller is not revealed by a 422", async () => {
    const { gateway } = await startShipped();
    await send(`${gateway.url}/orders`, keyed("Bearer alice"));
    const probe = await send(`${gateway.url}/orders`, keyed("Bearer mallory", '{"amount":99}'));
    expect(probe.status).toBe(201);
  });

  it("a planted business key does not reach the invoice's owner", async () => {
    const { gateway, upstream } = await startShipped();
    const body = invoiceBody("INV-7");
    const tenant = { "x-tenant-id": "acme", "content-type": "application/json" };
    const planted = await send(`${gateway.url}/invoices`, {
      headers: { ...tenant, authorization: "Bearer mallory" },
      body,
    });
    const owner = await send(`${gateway.url}/invoices`, {
      headers: { ...tenant, authorization: "Bearer acme" },
      body,
    });
    expect(planted.status).toBe(201);
    expect(owner.headers["idempotent-replayed"]).toBeUndefined();
    expect(upstream.calls).toHaveLength(2);
  });

  it.each([401, 403, 407])(
    "a %i is never stored by a status class, so it cannot be planted",
    async (status) => {
      let n = 0;
      const { gateway, upstream } = await start(
        { defaults: { identity: [] }, routes: [invoiceRoute] },
        (_call, res) => {
          res.writeHead(n++ === 0 ? status : 201, { "content-type": "application/json" });
          res.end(JSON.stringify({ n }));
        },
      );
      const json = { "content-type": "application/json" };
      const first = await send(`${gateway.url}/invoices`, { headers: json, body: invoiceBody() });
      const second = await send(`${gateway.url}/invoices`, { headers: json, body: invoiceBody() });
      expect(first.status).toBe(status);
      expect(second.status).toBe(201);
      expect(upstream.calls).toHaveLength(2);
    },
  );

  it("a header that only a trusted proxy sets is refused from anyone else", async () => {
    const routes = [{ ...invoiceRoute, scope: ["header:X-Tenant-Id"] }];
    const headers = { "x-tenant-id": "victim", "content-type": "application/json" };
    const { gateway: first, upstream } = await start({
      trustProxy: { addresses: ["10.0.0.0/8"], headers: ["X-Tenant-Id"] },
      routes,
    });
    const refused = await send(`${first.url}/invoices`, { headers, body: invoiceBody() });
    expect(refused.status).toBe(400);
    expect(refused.json()).toMatchObject({ code: "UNTRUSTED_HEADER", header: "x-tenant-id" });
    const passThrough = await send(`${first.url}/health`, { method: "GET", headers });
    expect(passThrough.status).toBe(400);
    expect(upstream.calls).toHaveLength(0);
    await first.close();
    gateway = await startTestGateway({
      upstream: upstream.url,
      trustProxy: { addresses: ["127.0.0.1"], headers: ["X-Tenant-Id"] },
      routes,
    });
    expect((await send(`${gateway.url}/invoices`, { headers, body: invoiceBody() })).status).toBe(201);
  });

  it("forwarding headers from a client are overwritten, from a trusted proxy extended", async () => {
    const spoofed = {
      "x-forwarded-for": "1.2.3.4",
      "x-forwarded-host": "evil.example",
      forwarded: "for=1.2.3.4",
    };
    const { gateway: first, upstream } = await start({ routes: [] });
    await send(`${first.url}/x`, { method: "GET", headers: spoofed });
    expect(upstream.calls[0]?.headers).toMatchObject({ "x-forwarded-for": "127.0.0.1" });
    expect(upstream.calls[0]?.headers["x-forwarded-host"]).not.toBe("evil.example");
    expect(upstream.calls[0]?.headers.forwarded).toBeUndefined();
    await first.close();
    gateway = await startTestGateway({ upstream: upstream.url, trustProxy: { addresses: ["127.0.0.0/8"] } });
    await send(`${gateway.url}/x`, { method: "GET", headers: spoofed });
    expect(upstream.calls[1]?.headers).toMatchObject({
      "x-forwarded-for": "1.2.3.4, 127.0.0.1",
      "x-forwarded-host": "evil.example",
      forwarded: "for=1.2.3.4",
    });
  });
});

describe("different operations never collapse into one key", () => {
  const json = { "content-type": "application/json" };
  const post = (path: string, body: string | Buffer, headers: Record<string, string> = json) =>
    send(`${gateway?.url}${path}`, { headers, body });

  it("integers beyond 2^53 are refused with a 400 naming the field, not rounded into another's key", async () => {
    const { upstream } = await start({ routes: [invoiceRoute] });
    const a = await post("/invoices", '{"invoiceNumber":"A","transactionId":12345678901234567890}');
    const b = await post("/invoices", '{"invoiceNumber":"A","transactionId":12345678901234567891}');
    for (const reply of [a, b]) {
      expect(reply.status).toBe(400);
      expect(reply.json()).toMatchObject({ code: "INVALID_KEY_FIELD", source: "body:/transactionId" });
      expect(String(reply.json().detail)).toContain("send it as a string");
    }
    expect(upstream.calls).toHaveLength(0);
    expect((await post("/invoices", '{"invoiceNumber":"A","transactionId":9007199254740991}')).status).toBe(
      201,
    );
  });

  it("a __proto__ member is a member, not an empty object", async () => {
    const { upstream } = await start({ routes: [{ ...invoiceRoute, key: { from: ["body:/meta"] } }] });
    await post("/invoices", '{"meta":{"__proto__":{"x":1}}}');
    const other = await post("/invoices", '{"meta":{}}');
    expect(other.headers["idempotent-replayed"]).toBeUndefined();
    expect(upstream.calls).toHaveLength(2);
  });

  it.each([
    [
      "invalid UTF-8",
      Buffer.from([
        0x7b, 0x22, 0x69, 0x6e, 0x76, 0x6f, 0x69, 0x63, 0x65, 0x4e, 0x75, 0x6d, 0x62, 0x65, 0x72, 0x22, 0x3a,
        0x22, 0xff, 0x22, 0x7d,
      ]),
      "not valid UTF-8",
    ],
    ["duplicate members", '{"invoiceNumber":"A","invoiceNumber":"B","transactionId":"T"}', "Duplicate key"],
    [
      "deep nesting",
      `{"invoiceNumber":${"[".repeat(100_000)}${"]".repeat(100_000)},"transactionId":"T"}`,
      "nested deeper",
    ],
  ])("%s is a 400, never a guess or a 500", async (_name, body, reason) => {
    const { upstream } = await start({ routes: [invoiceRoute] });
    const reply = await post("/invoices", body);
    expect(reply.status).toBe(400);
    expect(reply.json()).toMatchObject({ code: "INVALID_BODY" });
    expect(String(reply.json().detail)).toContain(reason);
    expect(upstream.calls).toHaveLength(0);
  });

  it("form values %FF and %FE are refused, not decoded alike", async () => {
    const { upstream } = await start({ routes: [{ ...invoiceRoute, key: { from: ["form:invoice"] } }] });
    const form = { "content-type": "application/x-www-form-urlencoded" };
    for (const body of ["invoice=%FF", "invoice=%FE"]) {
      const reply = await post("/invoices", body, form);
      expect(reply.status).toBe(400);
      expect(reply.json()).toMatchObject({ code: "INVALID_BODY" });
    }
    const twice = await post("/invoices", "invoice=1&invoice=2", form);
    expect(twice.json()).toMatchObject({ code: "INVALID_KEY_FIELD", source: "form:invoice" });
    expect(upstream.calls).toHaveLength(0);
  });

  it("a key value over 1 KB is a 400 naming it, for each of many copies of a 900 KB one", async () => {
    const { upstream } = await start({ routes: [invoiceRoute] });
    const huge = JSON.stringify({ invoiceNumber: "x".repeat(900_000), transactionId: "T" });
    const copies = await Promise.all(
      Array.from({ length: 40 }, () => send(`${gateway?.url}/invoices`, { headers: json, body: huge })),
    );
    for (const copy of copies) {
      expect(copy.status).toBe(400);
      expect(copy.json()).toMatchObject({ code: "INVALID_KEY_FIELD", source: "body:/invoiceNumber" });
    }
    expect(upstream.calls).toHaveLength(0);
  });
});

describe("one caller cannot exhaust the gateway", () => {
  const json = { "content-type": "application/json" };
  const post = (n: string) => send(`${gateway?.url}/invoices`, { headers: json, body: invoiceBody(n) });

  it("the memory store evicts completed records, oldest first, and counts them", async () => {
    const { upstream } = await start({ store: { memory: { maxEntries: 3 } }, routes: [invoiceRoute] });
    for (const n of ["A", "B", "C", "D"]) expect((await post(n)).status).toBe(201);
    expect((await post("D")).headers["idempotent-replayed"]).toBe("true");
    expect((await post("B")).headers["idempotent-replayed"]).toBe("true");
    // A gave way to D.
    expect((await post("A")).headers["idempotent-replayed"]).toBeUndefined();
    expect(upstream.calls).toHaveLength(5);
    const metrics = await gateway?.metricsRegistry.getSingleMetricAsString(
      "idempotency_gateway_store_evictions_total",
    );
    expect(metrics).toContain("idempotency_gateway_store_evictions_total 2");
  });

  it("a store full of requests in flight answers 503, and never evicts one of them", async () => {
    const held = gate();
    const { upstream } = await start(
      { store: { memory: { maxEntries: 2 } }, routes: [invoiceRoute] },
      async (_c, res) => {
        await held.promise;
        res.writeHead(201);
        res.end("ok");
      },
    );
    const inFlight = [post("A"), post("B")];
    await upstream.called(2);
    const refused = await post("C");
    expect(refused.status).toBe(503);
    expect(refused.json()).toMatchObject({ code: "STORE_FULL" });
    expect(refused.headers["retry-after"]).toBeDefined();
    const duplicate = post("A");
    held.open();
    expect((await Promise.all(inFlight)).map((r) => r.status)).toEqual([201, 201]);
    expect((await duplicate).headers["idempotent-replayed"]).toBe("true");
    expect(upstream.calls).toHaveLength(2);
  });
});

describe("every upstream answer is bounded", () => {
  const json = { "content-type": "application/json" };

  it("an answer over maxResponseSize reaches its caller whole, is not stored, and the key turns unknown", async () => {
    const big = Buffer.alloc(50_000, "x");
    const { gateway, upstream } = await start(
      { routes: [{ ...invoiceRoute, maxResponseSize: "1kb" }] },
      (_c, res) => {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end(big);
      },
    );
    const first = await send(`${gateway.url}/invoices`, { headers: json, body: invoiceBody() });
    expect(first.status).toBe(200);
    expect(first.body.equals(big)).toBe(true);
    const retry = await send(`${gateway.url}/invoices`, { headers: json, body: invoiceBody() });
    expect(retry.status).toBe(409);
    expect(retry.json()).toMatchObject({ code: "OUTCOME_UNKNOWN" });
    expect(upstream.calls).toHaveLength(1);
  });

  it("upstream.timeout is a deadline for the whole answer: a trickling backend cannot hold a key", async () => {
    upstream = await startUpstream((_c, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      const drip = setInterval(() => res.write("."), 20);
      res.on("close", () => clearInterval(drip));
    });
    gateway = await startTestGateway({
      upstream: { url: upstream.url, timeout: "300ms" },
      routes: [invoiceRoute],
    });
    const first = await send(`${gateway.url}/invoices`, { headers: json, body: invoiceBody() });
    expect(first.status).toBe(504);
    expect(first.json()).toMatchObject({ code: "UPSTREAM_OUTCOME_UNKNOWN", state: "unknown" });
  });
});

describe("slow and greedy clients are cut off", () => {
  /** Writes the bytes, never finishes the request, and resolves with what the server sent before closing. */
  function stall(url: string, bytes: string): Promise<string> {
    const { hostname, port } = new URL(url);
    return new Promise((resolve, reject) => {
      const socket = connect({ host: hostname, port: Number(port) });
      let got = "";
      socket.on("data", (c: Buffer) => {
        got += c.toString("latin1");
      });
      socket.on("error", reject);
      socket.on("close", () => resolve(got));
      socket.write(bytes);
    });
  }

  it("slow headers are answered 408 after headersTimeout, a stalled body after requestTimeout", async () => {
    const { gateway, upstream } = await start({
      listen: { host: "127.0.0.1", port: 0, headersTimeout: "300ms", requestTimeout: "600ms" },
      routes: [invoiceRoute],
    });
    const slowHeaders = await stall(gateway.url, "POST /invoices HTTP/1.1\r\nHost: x\r\n");
    expect(slowHeaders).toMatch(/^HTTP\/1\.1 408/);
    expect(slowHeaders).toContain('"code":"REQUEST_TIMEOUT"');
    expect(slowHeaders).toMatch(/\r\nx-request-id: [0-9a-f-]{36}\r\n/i);
    const body = await stall(
      gateway.url,
      rawHttp("POST", "/invoices", { "Content-Length": "100" }).replace(/Content-Length: 0\r\n/, ""),
    );
    expect(body).toMatch(/^HTTP\/1\.1 408/);
    expect(upstream.calls).toHaveLength(0);
  });

  it("Expect: 100-continue with a body over the limit is answered 413 before the body is sent", async () => {
    const { gateway, upstream } = await start({ routes: [{ ...invoiceRoute, maxBodySize: "1kb" }] });
    const head = [
      "POST /invoices HTTP/1.1",
      "Host: x",
      "Content-Type: application/json",
      "Content-Length: 5000",
      "Expect: 100-continue",
      "",
      "",
    ].join("\r\n");
    const answer = await stall(gateway.url, head);
    expect(answer).toMatch(/^HTTP\/1\.1 413/);
    expect(answer).not.toContain("100 Continue");
    expect(answer).toContain("BODY_TOO_LARGE");
    expect(upstream.calls).toHaveLength(0);
  });

  it("connections beyond maxConnections are closed on arrival", async () => {
    const { gateway } = await start({
      listen: { host: "127.0.0.1", port: 0, maxConnections: 1 },
      routes: [],
    });
    const { hostname, port } = new URL(gateway.url);
    const first = connect({ host: hostname, port: Number(port) });
    await new Promise((resolve) => first.once("connect", resolve));
    const second = await stall(gateway.url, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    expect(second).toBe("");
    first.destroy();
  });

  it("headers beyond maxHeaderSize are a 431", async () => {
    const { gateway, upstream } = await start({
      listen: { host: "127.0.0.1", port: 0, maxHeaderSize: "1kb" },
      routes: [],
    });
    const reply = await rawRequest(gateway.url, rawHttp("GET", "/", { "X-Big": "x".repeat(2_000) }));
    expect(reply.status).toBe(431);
    expect(JSON.parse(reply.body.toString())).toMatchObject({ code: "HEADERS_TOO_LARGE", status: 431 });
    expect(upstream.calls).toHaveLength(0);
  });
});

describe("smaller doors", () => {
  const json = { "content-type": "application/json" };

  it("upstream header bytes are replayed byte for byte, UTF-8 and not", async () => {
    const { gateway, upstream } = await start({ routes: [invoiceRoute] }, (_c, res) => {
      // latin1 strings: one char per byte, so these are the bytes on the wire.
      res.setHeader("X-Utf8", Buffer.from("café ✓").toString("latin1"));
      res.setHeader("X-Raw", "\xff\xfe");
      res.writeHead(201);
      res.end("ok");
    });
    const request = rawHttp("POST", "/invoices", json, invoiceBody());
    const first = await rawRequest(gateway.url, request);
    const replay = await rawRequest(gateway.url, request);
    expect(first.status).toBe(201);
    expect(first.head.includes(Buffer.from("X-Utf8: café ✓"))).toBe(true);
    expect(first.head.includes(Buffer.from([0x58, 0x2d, 0x52, 0x61, 0x77, 0x3a, 0x20, 0xff, 0xfe]))).toBe(
      true,
    );
    expect(replay.headers).toContainEqual(["idempotent-replayed", "true"]);
    expect(replay.head.includes(Buffer.from("X-Utf8: café ✓"))).toBe(true);
    expect(replay.head.includes(Buffer.from([0xff, 0xfe]))).toBe(true);
    expect(upstream.calls).toHaveLength(1);
  });

  it("two Idempotency-Key lines, one empty, are a 400; an sf-string with parameters is a key", async () => {
    const { gateway, upstream } = await start({ routes: [] });
    const twoLines = await rawRequest(
      gateway.url,
      rawHttp(
        "POST",
        "/orders",
        [
          ["Idempotency-Key", "abc"],
          ["Idempotency-Key", ""],
        ],
        "{}",
      ),
    );
    expect(twoLines.status).toBe(400);
    expect(JSON.parse(twoLines.body.toString())).toMatchObject({ code: "INVALID_KEY" });
    const withParams = { "idempotency-key": '"abc";v=1', ...json };
    await send(`${gateway.url}/orders`, { headers: withParams, body: "{}" });
    const again = await send(`${gateway.url}/orders`, {
      headers: { ...withParams, "idempotency-key": '"abc"' },
      body: "{}",
    });
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(upstream.calls).toHaveLength(1);
  });

  it("a Connection header naming a key or scope source is a 400", async () => {
    const { gateway, upstream } = await start({
      routes: [{ ...invoiceRoute, scope: ["header:X-Tenant-Id"] }],
    });
    const reply = await rawRequest(
      gateway.url,
      rawHttp(
        "POST",
        "/invoices",
        { ...json, "X-Tenant-Id": "acme", Connection: "X-Tenant-Id" },
        invoiceBody(),
      ),
    );
    expect(reply.status).toBe(400);
    expect(JSON.parse(reply.body.toString()).detail).toContain("x-tenant-id");
    expect(upstream.calls).toHaveLength(0);
  });

  it("method-override headers are refused on a protected route, TRACE everywhere", async () => {
    const { gateway, upstream } = await start({ routes: [invoiceRoute] });
    const override = await send(`${gateway.url}/invoices`, {
      method: "GET",
      headers: { "x-http-method-override": "POST" },
    });
    expect(override.status).toBe(400);
    expect(override.json()).toMatchObject({ code: "AMBIGUOUS_REQUEST" });
    const trace = await rawRequest(gateway.url, rawHttp("TRACE", "/anything", { Authorization: "Bearer s" }));
    expect(trace.status).toBe(405);
    expect(upstream.calls).toHaveLength(0);
  });
});

describe("the admin API", () => {
  it("answers a request its HTTP parser refuses with problem details and a request id", async () => {
    const { gateway } = await start({ admin: { port: 0 }, routes: [invoiceRoute] });
    const reply = await rawRequest(gateway.adminUrl as string, "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n");
    expect(reply.status).toBe(400);
    const problem = JSON.parse(reply.body.toString());
    expect(problem).toMatchObject({ code: "MALFORMED_REQUEST" });
    expect(problem.requestId).toBe(Object.fromEntries(reply.headers)["x-request-id"]);
  });

  it("refuses writes without a token even on loopback", async () => {
    const { gateway } = await start({ routes: [invoiceRoute] });
    const purge = await send(`${gateway.adminUrl}/keys/purge`, {
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ route: "create-invoice", key: ["A", "T-1"] }),
    });
    expect(purge.status).toBe(403);
    expect(purge.json()).toMatchObject({ code: "ADMIN_TOKEN_REQUIRED" });
  });

  it("refuses a resolve whose stored header holds CR/LF", async () => {
    const token = "a-long-enough-admin-token";
    const { gateway } = await start({ admin: { port: 0, token }, routes: [invoiceRoute] });
    const reply = await send(`${gateway.adminUrl}/keys/resolve`, {
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({
        route: "create-invoice",
        key: ["A", "T-1"],
        action: "store",
        response: { status: 200, headers: [["x-a", "1\r\nSet-Cookie: planted=1"]] },
      }),
    });
    expect(reply.status).toBe(400);
    expect(reply.json().detail).toContain("CR, LF");
  });

  it("accepts only IP literals as loopback for an admin API without a token", () => {
    const config = (host: string) => () =>
      testConfig({ upstream: "http://127.0.0.1:9", admin: { host, port: 0 } });
    expect(config("127.attacker.example")).toThrow(/admin.token: required/);
    expect(config("localhost")).toThrow(/admin.token: required/);
    expect(config("127.0.0.1")).not.toThrow();
    expect(config("::1")).not.toThrow();
  });
});

describe("the admin API on a failing store", () => {
  it("answers a store error as problem+json 503, not text/plain 500", async () => {
    const faults = loseReplies(new MemoryStore());
    upstream = await startUpstream();
    const token = "a-long-enough-admin-token";
    gateway = await startTestGateway(
      { upstream: upstream.url, admin: { port: 0, token }, routes: [invoiceRoute] },
      faults.store,
    );
    faults.failNext("get", 1);
    const reply = await send(`${gateway.adminUrl}/keys/lookup`, {
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ route: "create-invoice", key: ["A", "T-1"] }),
    });
    expect(reply.status).toBe(503);
    expect(reply.headers["content-type"]).toBe("application/problem+json");
    expect(reply.json()).toMatchObject({ code: "STORE_UNAVAILABLE" });
  });
});
