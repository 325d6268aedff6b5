/**
 * The gateway as a hostile caller meets it: real gateway, real backend, real sockets. Each block is
 * one class of attack from the security model in the README; each test fails on a gateway without
 * the defence it names.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { RunningGateway } from "../../src/gateway/index.js";
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
