/**
 * The gateway as a hostile caller meets it: real gateway, real backend, real sockets. Each block is
 * one class of attack from the security model in the README; each test fails on a gateway without
 * the defence it names.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { parseConfigText } from "../../src/config/index.js";
import { type RunningGateway, startGateway } from "../../src/gateway/index.js";
import { startTestGateway, type TestConfig } from "../helpers/gateway.js";
import { send } from "../helpers/http.js";
import { rawHttp, rawRequest } from "../helpers/raw.js";
import { startUpstream, type TestUpstream, type UpstreamHandler } from "../helpers/upstream.js";

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

  it("a backslash never reaches the backend (IIS would read it as a slash)", async () => {
    const { gateway, upstream } = await start({ routes: [invoiceRoute] });
    const reply = await rawRequest(gateway.url, rawHttp("POST", "/x\\..\\invoices", {}, invoiceBody()));
    expect(reply.status).toBe(400);
    expect(upstream.calls).toHaveLength(0);
  });

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
