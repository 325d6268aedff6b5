import { request as httpRequest } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import type { RunningGateway } from "../../src/gateway/index.js";
import { MemoryStore } from "../../src/store/index.js";
import { startTestGateway, type TestConfig } from "../helpers/gateway.js";
import { send } from "../helpers/http.js";
import {
  deadPort,
  gate,
  startUpstream,
  type TestUpstream,
  type UpstreamHandler,
} from "../helpers/upstream.js";

const PROBLEM = "application/problem+json";
let upstream: TestUpstream | undefined;
let gateway: RunningGateway | undefined;
let store: MemoryStore;

async function setup(handler?: UpstreamHandler, config: Omit<TestConfig, "upstream"> = {}) {
  upstream = await startUpstream(handler);
  store = new MemoryStore();
  gateway = await startTestGateway({ upstream: upstream.url, ...config }, store);
  return { up: upstream, gw: gateway };
}

afterEach(async () => {
  await gateway?.close();
  await upstream?.close();
  gateway = undefined;
  upstream = undefined;
});

const key = (k: string, extra: Record<string, string> = {}) => ({ "idempotency-key": k, ...extra });
const binary = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80, 0xc3, 0x28, 10, 13]);

describe("pass-through", () => {
  it("forwards method, path, query and headers, removes hop-by-hop headers and adds X-Forwarded-*", async () => {
    const { up, gw } = await setup();
    const res = await send(`${gw.url}/things/1?a=1&b=%20`, {
      method: "GET",
      headers: { "x-custom": "v", "proxy-authorization": "secret", "x-forwarded-for": "9.9.9.9" },
    });
    expect(res.status).toBe(200);
    const call = up.calls[0];
    expect(call).toMatchObject({ method: "GET", url: "/things/1?a=1&b=%20" });
    expect(call?.headers["x-custom"]).toBe("v");
    expect(call?.headers["proxy-authorization"]).toBeUndefined();
    // The client is no trusted proxy: its X-Forwarded-For is replaced, not extended.
    expect(call?.headers["x-forwarded-for"]).toBe("127.0.0.1");
    expect(call?.headers["x-forwarded-proto"]).toBe("http");
    expect(call?.headers["x-forwarded-host"]).toBe(new URL(gw.url).host);
  });

  it("streams a large request body and response body through unchanged", async () => {
    const big = Buffer.alloc(3 * 1024 * 1024, 7);
    const { up, gw } = await setup((call, res) => {
      res.end(call.body);
    });
    const res = await send(`${gw.url}/upload`, { method: "POST", body: big });
    expect(res.status).toBe(200);
    expect(res.body.equals(big)).toBe(true);
    expect(up.calls[0]?.body.length).toBe(big.length);
  });

  it("passes POSTs without a key through on unmatched paths, every time", async () => {
    const { up, gw } = await setup();
    await send(`${gw.url}/orders`, { body: "x" });
    await send(`${gw.url}/orders`, { body: "x" });
    expect(up.calls).toHaveLength(2);
  });

  it("passes through a method outside `methods`, even with a key", async () => {
    const { up, gw } = await setup();
    await send(`${gw.url}/orders`, { method: "GET", headers: key("g1") });
    const second = await send(`${gw.url}/orders`, { method: "GET", headers: key("g1") });
    expect(up.calls).toHaveLength(2);
    expect(second.headers["idempotent-replayed"]).toBeUndefined();
  });

  it("passes through a route with protect: false, even with a key", async () => {
    const { up, gw } = await setup(undefined, {
      routes: [{ name: "raw", match: { path: "/raw" }, protect: false }],
    });
    await send(`${gw.url}/raw`, { headers: key("p1"), body: "x" });
    await send(`${gw.url}/raw`, { headers: key("p1"), body: "x" });
    expect(up.calls).toHaveLength(2);
  });

  it("answers 502 problem+json when the upstream cannot be reached", async () => {
    upstream = await startUpstream();
    gateway = await startTestGateway({ upstream: `http://127.0.0.1:${await deadPort()}` });
    const res = await send(`${gateway.url}/anything`, { method: "GET" });
    expect(res.status).toBe(502);
    expect(res.headers["content-type"]).toBe(PROBLEM);
    expect(res.json()).toMatchObject({
      code: "UPSTREAM_UNREACHABLE",
      type: "urn:idempotency-gateway:problem:upstream-unreachable",
    });
  });
});

describe("protected requests", () => {
  it("replays status, headers and a binary body byte for byte, marked Idempotent-Replayed", async () => {
    const { up, gw } = await setup((_call, res) => {
      res.writeHead(201, [
        "Content-Type",
        "application/octet-stream",
        "Set-Cookie",
        "a=1",
        "Set-Cookie",
        "b=2",
        "X-Invoice-Id",
        String(Math.random()),
      ]);
      res.end(binary);
    });
    const first = await send(`${gw.url}/invoices`, { headers: key("k-bin"), body: "{}" });
    const retry = await send(`${gw.url}/invoices`, { headers: key("k-bin"), body: "{}" });
    expect(up.calls).toHaveLength(1);
    expect(first.status).toBe(201);
    expect(retry.status).toBe(201);
    expect(first.body.equals(binary)).toBe(true);
    expect(retry.body.equals(binary)).toBe(true);
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    expect(first.headers["idempotent-replayed"]).toBeUndefined();
    // Every answer carries its own request's id; everything else is the stored answer's.
    const { "idempotent-replayed": _, "x-request-id": retryId, ...retryHeaders } = retry.headers;
    const { "x-request-id": firstId, ...firstHeaders } = first.headers;
    expect(retryHeaders).toEqual(firstHeaders);
    expect(firstId).toMatch(/^[0-9a-f-]{36}$/);
    expect(retryId).toMatch(/^[0-9a-f-]{36}$/);
    expect(retryId).not.toBe(firstId);
    expect(retry.headers["set-cookie"]).toEqual(["a=1", "b=2"]);
  });

  it("sends the response headers of a replay in the same order and case as the first answer", async () => {
    const { gw } = await setup((_call, res) => {
      res.writeHead(200, ["X-B", "2", "X-A", "1", "X-B", "3"]);
      res.end("ok");
    });
    const raw = () =>
      new Promise<string[]>((resolve, reject) => {
        const req = httpRequest(`${gw.url}/x`, { method: "POST", headers: key("order") }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.rawHeaders));
        });
        req.on("error", reject);
        req.end("{}");
      });
    const strip = (h: string[]) => {
      const out: string[] = [];
      for (let i = 0; i < h.length; i += 2) {
        const n = (h[i] as string).toLowerCase();
        if (!["idempotent-replayed", "x-request-id", "connection", "keep-alive"].includes(n))
          out.push(h[i] as string, h[i + 1] as string);
      }
      return out;
    };
    const first = await raw();
    const retry = await raw();
    expect(strip(retry)).toEqual(strip(first));
    expect(strip(first).slice(0, 6)).toEqual(["X-B", "2", "X-A", "1", "X-B", "3"]);
  });

  it("answers 422 when a key is reused with another payload, without calling the upstream", async () => {
    const { up, gw } = await setup();
    await send(`${gw.url}/pay`, { headers: key("k-422"), body: '{"amount":10}' });
    const res = await send(`${gw.url}/pay`, { headers: key("k-422"), body: '{"amount":11}' });
    expect(res.status).toBe(422);
    expect(res.headers["content-type"]).toBe(PROBLEM);
    expect(res.json()).toMatchObject({
      code: "KEY_REUSED",
      status: 422,
      type: "urn:idempotency-gateway:problem:key-reused",
    });
    expect(up.calls).toHaveLength(1);
  });

  it("sends 20 concurrent identical requests to the upstream once and gives all the same answer", async () => {
    const hold = gate();
    let executions = 0;
    const { up, gw } = await setup(async (_call, res) => {
      executions++;
      await hold.promise;
      res.end(`invoice-${executions}-${Math.random()}`);
    });
    const all = Array.from({ length: 20 }, () =>
      send(`${gw.url}/invoices`, { headers: key("k-20"), body: "{}" }),
    );
    await up.called(1);
    hold.open();
    const replies = await Promise.all(all);
    expect(up.calls).toHaveLength(1);
    expect(new Set(replies.map((r) => r.body.toString()))).toHaveProperty("size", 1);
    expect(replies.every((r) => r.status === 200)).toBe(true);
    expect(replies.filter((r) => r.headers["idempotent-replayed"] === "true")).toHaveLength(19);
  });

  it("answers a concurrent duplicate 409 + Retry-After at once with concurrent: reject", async () => {
    const hold = gate();
    const { up, gw } = await setup(
      async (_c, res) => {
        await hold.promise;
        res.end("done");
      },
      { defaults: { concurrent: "reject" } },
    );
    const first = send(`${gw.url}/x`, { headers: key("k-rej"), body: "{}" });
    await up.called(1);
    const dup = await send(`${gw.url}/x`, { headers: key("k-rej"), body: "{}" });
    hold.open();
    expect(dup.status).toBe(409);
    expect(dup.headers["retry-after"]).toBe("1");
    expect(dup.json()).toMatchObject({ code: "IN_FLIGHT", state: "in_flight" });
    expect((await first).status).toBe(200);
    expect(up.calls).toHaveLength(1);
  });

  it("answers a waiting duplicate 409 + Retry-After once waitTimeout has passed", async () => {
    const hold = gate();
    const { up, gw } = await setup(
      async (_c, res) => {
        await hold.promise;
        res.end("done");
      },
      { defaults: { waitTimeout: "150ms" } },
    );
    const first = send(`${gw.url}/x`, { headers: key("k-wait"), body: "{}" });
    await up.called(1);
    const dup = await send(`${gw.url}/x`, { headers: key("k-wait"), body: "{}" });
    hold.open();
    expect(dup.status).toBe(409);
    expect(dup.headers["retry-after"]).toBe("1");
    expect((await first).status).toBe(200);
  });

  it("releases the key when the status is not in `cache`, passing Retry-After on", async () => {
    let n = 0;
    const { up, gw } = await setup((_c, res) => {
      n++;
      if (n === 1) {
        res.writeHead(503, { "retry-after": "7" });
        res.end("busy");
      } else res.end("ok");
    });
    const first = await send(`${gw.url}/x`, { headers: key("k-503"), body: "{}" });
    const retry = await send(`${gw.url}/x`, { headers: key("k-503"), body: "{}" });
    const again = await send(`${gw.url}/x`, { headers: key("k-503"), body: "{}" });
    expect(first.status).toBe(503);
    expect(first.headers["retry-after"]).toBe("7");
    expect(retry.status).toBe(200);
    expect(retry.headers["idempotent-replayed"]).toBeUndefined();
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(up.calls).toHaveLength(2);
  });

  it("stores a 4xx answer and replays it", async () => {
    const { up, gw } = await setup((_c, res) => {
      res.writeHead(400);
      res.end("bad invoice");
    });
    await send(`${gw.url}/x`, { headers: key("k-400"), body: "{}" });
    const retry = await send(`${gw.url}/x`, { headers: key("k-400"), body: "{}" });
    expect(retry.status).toBe(400);
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    expect(up.calls).toHaveLength(1);
  });

  it("answers 413 for a body over maxBodySize and keeps no state", async () => {
    const { up, gw } = await setup(undefined, { defaults: { maxBodySize: "1kb" } });
    const res = await send(`${gw.url}/x`, { headers: key("k-413"), body: "x".repeat(2048) });
    expect(res.status).toBe(413);
    expect(res.json()).toMatchObject({ code: "BODY_TOO_LARGE", limit: 1024 });
    expect(up.calls).toHaveLength(0);
    expect(store.size).toBe(0);
    const ok = await send(`${gw.url}/x`, { headers: key("k-413"), body: "small" });
    expect(ok.status).toBe(200);
    expect(ok.headers["idempotent-replayed"]).toBeUndefined();
  });

  it("answers 413 for an oversized chunked body without Content-Length", async () => {
    const { up, gw } = await setup(undefined, { defaults: { maxBodySize: "1kb" } });
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${gw.url}/x`, { method: "POST", headers: key("k-chunk") }, (res) => {
        res.resume();
        resolve(res.statusCode as number);
      });
      req.on("error", reject);
      for (let i = 0; i < 4; i++) req.write("y".repeat(512));
      req.end();
    });
    expect(status).toBe(413);
    expect(up.calls).toHaveLength(0);
    expect(store.size).toBe(0);
  });

  it.each([
    ["an empty key", ""],
    ["a key over 255 characters", "k".repeat(256)],
    ["a non-ASCII key", "clé"],
    ["two keys", "a, b"],
  ])("answers 400 for %s and keeps no state", async (_name, value) => {
    const { up, gw } = await setup();
    const res = await send(`${gw.url}/x`, { headers: { "idempotency-key": value }, body: "{}" });
    expect(res.status).toBe(400);
    expect(res.json()).toMatchObject({ code: "INVALID_KEY" });
    expect(up.calls).toHaveLength(0);
    expect(store.size).toBe(0);
  });

  it("treats a quoted key (RFC 8941) and the bare token as the same key", async () => {
    const { up, gw } = await setup();
    await send(`${gw.url}/x`, { headers: { "idempotency-key": '"same-key"' }, body: "{}" });
    const retry = await send(`${gw.url}/x`, { headers: { "idempotency-key": "same-key" }, body: "{}" });
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    expect(up.calls).toHaveLength(1);
  });

  it("answers 400 naming the field when a derived key field is missing, and 400 for bad JSON", async () => {
    const { up, gw } = await setup(undefined, {
      routes: [{ name: "inv", match: { path: "/invoices" }, key: { from: ["body:/invoiceNumber"] } }],
    });
    const missing = await send(`${gw.url}/invoices`, { body: '{"amount":1}' });
    const bad = await send(`${gw.url}/invoices`, { body: "{not json" });
    expect(missing.status).toBe(400);
    expect(missing.json()).toMatchObject({ code: "MISSING_KEY", source: "body:/invoiceNumber" });
    expect(bad.status).toBe(400);
    expect(bad.json()).toMatchObject({ code: "INVALID_BODY" });
    expect(up.calls).toHaveLength(0);
    expect(store.size).toBe(0);
  });

  it("keeps the tenants of a scoped route apart", async () => {
    const { up, gw } = await setup(undefined, {
      routes: [
        {
          name: "inv",
          match: { path: "/invoices" },
          key: { from: ["body:/n"] },
          scope: ["header:X-Tenant-Id"],
        },
      ],
    });
    const body = '{"n":"4711"}';
    const a = await send(`${gw.url}/invoices`, { headers: { "x-tenant-id": "acme" }, body });
    const b = await send(`${gw.url}/invoices`, { headers: { "x-tenant-id": "globex" }, body });
    expect(a.headers["idempotent-replayed"]).toBeUndefined();
    expect(b.headers["idempotent-replayed"]).toBeUndefined();
    expect(up.calls).toHaveLength(2);
  });

  it("recognises a robot's retry by path and body fields despite a new timestamp, and 422s a changed amount", async () => {
    const { up, gw } = await setup(undefined, {
      routes: [
        {
          name: "robot-callback",
          match: { method: "POST", path: "/callbacks/:robot" },
          key: { header: false, from: ["path:robot", "body:/transactionID"] },
          scope: ["path:robot"],
          fingerprint: ["body:/amount"],
        },
      ],
    });
    const report = (sentAt: number, amount: number) =>
      send(`${gw.url}/callbacks/r7`, {
        headers: { "idempotency-key": `fresh-${sentAt}` },
        body: JSON.stringify({ transactionID: "TX-1", amount, sentAt }),
      });
    const first = await report(1, 10);
    const retry = await report(2, 10);
    const changed = await report(3, 11);
    const otherRobot = await send(`${gw.url}/callbacks/r8`, {
      body: JSON.stringify({ transactionID: "TX-1", amount: 10 }),
    });
    expect(first.headers["idempotent-replayed"]).toBeUndefined();
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    expect(retry.body.equals(first.body)).toBe(true);
    expect(changed.status).toBe(422);
    expect(otherRobot.headers["idempotent-replayed"]).toBeUndefined();
    expect(up.calls).toHaveLength(2);
  });

  it("replays until the ttl ends, then forgets the stored response", async () => {
    // The store's clock is injected: a day passes without the test waiting for it.
    let now = Date.now();
    upstream = await startUpstream();
    store = new MemoryStore({ now: () => now });
    gateway = await startTestGateway({ upstream: upstream.url, defaults: { ttl: "1d" } }, store);
    await send(`${gateway.url}/x`, { headers: key("k-ttl"), body: "{}" });
    now += 86_400_000 - 1;
    const before = await send(`${gateway.url}/x`, { headers: key("k-ttl"), body: "{}" });
    now += 2;
    const after = await send(`${gateway.url}/x`, { headers: key("k-ttl"), body: "{}" });
    expect(before.headers["idempotent-replayed"]).toBe("true");
    expect(after.headers["idempotent-replayed"]).toBeUndefined();
    expect(upstream.calls).toHaveLength(2);
  });

  it("stores the response of a client that disconnected before it arrived, for its retry", async () => {
    const hold = gate();
    const { up, gw } = await setup(async (_c, res) => {
      await hold.promise;
      res.end("committed");
    });
    const req = httpRequest(`${gw.url}/x`, { method: "POST", headers: key("k-gone") });
    req.on("error", () => {});
    req.end("{}");
    await up.called(1);
    req.destroy();
    await new Promise((resolve) => req.on("close", resolve));
    hold.open();
    expect(await gw.engine.drain(5_000)).toBe(true);
    const retry = await send(`${gw.url}/x`, { headers: key("k-gone"), body: "{}" });
    expect(retry.status).toBe(200);
    expect(retry.body.toString()).toBe("committed");
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    expect(up.calls).toHaveLength(1);
  });

  it("releases the key after 502 when nothing reached the upstream", async () => {
    upstream = await startUpstream();
    store = new MemoryStore();
    gateway = await startTestGateway({ upstream: `http://127.0.0.1:${await deadPort()}` }, store);
    const res = await send(`${gateway.url}/x`, { headers: key("k-502"), body: "{}" });
    expect(res.status).toBe(502);
    expect(res.json()).toMatchObject({ code: "UPSTREAM_UNREACHABLE" });
    expect(store.size).toBe(0);
  });

  it("marks the key unknown after an upstream timeout (504) and rejects the retry with 409", async () => {
    const up = await startUpstream(() => {});
    upstream = up;
    store = new MemoryStore();
    gateway = await startTestGateway({ upstream: { url: up.url, timeout: "200ms" } }, store);
    const res = await send(`${gateway.url}/x`, { headers: key("k-504"), body: "{}" });
    expect(res.status).toBe(504);
    expect(res.json()).toMatchObject({ code: "UPSTREAM_OUTCOME_UNKNOWN", state: "unknown" });
    const retry = await send(`${gateway.url}/x`, { headers: key("k-504"), body: "{}" });
    expect(retry.status).toBe(409);
    expect(retry.json()).toMatchObject({ code: "OUTCOME_UNKNOWN", state: "unknown" });
    expect(up.calls).toHaveLength(1);
  });

  it("forwards a retry of an unknown outcome again with onUnknown: retry", async () => {
    let n = 0;
    upstream = await startUpstream((_c, res) => {
      n++;
      if (n > 1) res.end("second try");
    });
    gateway = await startTestGateway({
      upstream: { url: upstream.url, timeout: "200ms" },
      defaults: { onUnknown: "retry" },
    });
    expect((await send(`${gateway.url}/x`, { headers: key("k-u"), body: "{}" })).status).toBe(504);
    const retry = await send(`${gateway.url}/x`, { headers: key("k-u"), body: "{}" });
    expect(retry.status).toBe(200);
    expect(retry.body.toString()).toBe("second try");
    expect(upstream.calls).toHaveLength(2);
  });
});
