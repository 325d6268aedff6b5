import { Writable } from "node:stream";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { type RunningGateway, startGateway } from "../../src/gateway/index.js";
import { testConfig } from "../helpers/gateway.js";
import { type Reply, send } from "../helpers/http.js";
import { startUpstream, type TestUpstream, type UpstreamHandler } from "../helpers/upstream.js";

const TOKEN = "test-admin-token-0123456789";
let upstream: TestUpstream | undefined;
let gateway: RunningGateway | undefined;
afterEach(async () => {
  await gateway?.close();
  await upstream?.close();
  gateway = undefined;
  upstream = undefined;
});

const routes = [
  {
    name: "create-invoice",
    match: { method: "POST", path: "/invoices" },
    key: { from: ["body:/invoiceNumber", "body:/transactionId"] },
    scope: ["header:X-Tenant-Id"],
  },
];

/** A gateway whose JSON log lines are collected, with an admin token. */
async function setup(handler?: UpstreamHandler, extra: Record<string, unknown> = {}, timeout = "60s") {
  upstream = await startUpstream(handler);
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n")) if (line.trim()) lines.push(JSON.parse(line));
      done();
    },
  });
  gateway = await startGateway(
    testConfig({
      upstream: { url: upstream.url, timeout },
      admin: { port: 0, token: TOKEN },
      routes,
      ...extra,
    }),
    { logger: pino({ level: "info" }, sink) },
  );
  return { up: upstream, gw: gateway, lines };
}

const admin = (
  gw: RunningGateway,
  path: string,
  body?: unknown,
  token: string | null = TOKEN,
): Promise<Reply> =>
  send(`${gw.adminUrl}${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });

const invoice = (n: string, amount = 10) => ({
  headers: { "x-tenant-id": "acme", "content-type": "application/json" },
  body: JSON.stringify({ invoiceNumber: n, transactionId: "T-1", amount }),
});
const ref = (n: string) => ({ route: "create-invoice", key: [n, "T-1"], scope: ["acme"] });

describe("admin API", () => {
  it("needs the bearer token everywhere but the health endpoints", async () => {
    const { gw } = await setup();
    expect((await admin(gw, "/healthz", undefined, null)).status).toBe(200);
    expect((await admin(gw, "/readyz", undefined, null)).status).toBe(200);
    const none = await admin(gw, "/metrics", undefined, null);
    expect(none.status).toBe(401);
    expect(none.headers["content-type"]).toBe("application/problem+json");
    expect(none.headers["www-authenticate"]).toContain("Bearer");
    expect((await admin(gw, "/metrics", undefined, "wrong-token-0123456789xx")).status).toBe(401);
    expect((await admin(gw, "/keys/lookup", ref("A"), "short")).status).toBe(401);
    expect((await admin(gw, "/metrics")).status).toBe(200);
  });

  it("looks a key up by route and key material: state, stored status, times", async () => {
    const { gw } = await setup((_c, res) => {
      res.writeHead(201, { "content-type": "application/json" });
      res.end('{"id":"INV-1"}');
    });
    await send(`${gw.url}/invoices`, invoice("4711"));
    const found = await admin(gw, "/keys/lookup", ref("4711"));
    expect(found.status).toBe(200);
    expect(found.json()).toMatchObject({
      route: "create-invoice",
      state: "completed",
      response: { status: 201, bodyBytes: 14 },
    });
    expect(Date.parse(String(found.json().expiresAt))).toBeGreaterThan(
      Date.parse(String(found.json().createdAt)),
    );
    expect((await admin(gw, "/keys/lookup", { ...ref("4711"), scope: ["globex"] })).status).toBe(404);
    expect((await admin(gw, "/keys/lookup", { ...ref("4711"), route: "nope" })).json()).toMatchObject({
      code: "NO_SUCH_ROUTE",
    });
  });

  it("looks up a header key on an unmatched path through the default route", async () => {
    const { gw } = await setup();
    await send(`${gw.url}/pay`, { headers: { "idempotency-key": "hk-1" }, body: "{}" });
    const found = await admin(gw, "/keys/lookup", { route: "(default)", header: "hk-1" });
    expect(found.json()).toMatchObject({ state: "completed", response: { status: 200 } });
  });

  it("answers a malformed admin request with 400 naming the field, and changes nothing", async () => {
    const { gw } = await setup();
    const both = await admin(gw, "/keys/lookup", { route: "create-invoice", header: "x", key: ["a"] });
    expect(both.status).toBe(400);
    expect(both.json()).toMatchObject({ code: "INVALID_ADMIN_REQUEST" });
    const bad = await admin(gw, "/keys/resolve", { ...ref("1"), action: "store", response: { status: 99 } });
    expect(bad.status).toBe(400);
    expect(String(bad.json().detail)).toContain("response.status");
  });

  it("purges a key, after which a retry executes again", async () => {
    const { up, gw } = await setup();
    await send(`${gw.url}/invoices`, invoice("P-1"));
    expect((await admin(gw, "/keys/purge", ref("P-1"))).json()).toMatchObject({ purged: true });
    const retry = await send(`${gw.url}/invoices`, invoice("P-1"));
    expect(retry.headers["idempotent-replayed"]).toBeUndefined();
    expect(up.calls).toHaveLength(2);
  });

  it("resolves an unknown key by storing a response, which retries then get", async () => {
    const { up, gw } = await setup(() => {}, {}, "200ms");
    expect((await send(`${gw.url}/invoices`, invoice("U-1"))).status).toBe(504);
    const unknown = (await admin(gw, "/keys/lookup", ref("U-1"))).json();
    expect(unknown).toMatchObject({ state: "unknown" });
    // The settle time (here the 200 ms upstream timeout) in which the backend may still commit it.
    expect(unknown.settlesInMs).toBeGreaterThanOrEqual(0);
    expect(unknown.settlesInMs).toBeLessThanOrEqual(200);
    const resolved = await admin(gw, "/keys/resolve", {
      ...ref("U-1"),
      action: "store",
      response: { status: 201, headers: [["content-type", "application/json"]], body: '{"id":"INV-9"}' },
    });
    expect(resolved.json()).toMatchObject({
      resolved: "store",
      state: "completed",
      response: { status: 201 },
    });
    const retry = await send(`${gw.url}/invoices`, invoice("U-1"));
    expect(retry.status).toBe(201);
    expect(retry.body.toString()).toBe('{"id":"INV-9"}');
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    expect(up.calls).toHaveLength(1);
    const again = await admin(gw, "/keys/resolve", { ...ref("U-1"), action: "release" });
    expect(again.status).toBe(409);
    expect(again.json()).toMatchObject({ code: "NOT_UNKNOWN" });
  });

  it("resolves an unknown key by releasing it, after which a retry executes again", async () => {
    const { up, gw } = await setup(() => {}, {}, "200ms");
    expect((await send(`${gw.url}/invoices`, invoice("U-2"))).status).toBe(504);
    expect((await admin(gw, "/keys/resolve", { ...ref("U-2"), action: "release" })).json()).toMatchObject({
      resolved: "release",
    });
    expect((await admin(gw, "/keys/lookup", ref("U-2"))).status).toBe(404);
    await send(`${gw.url}/invoices`, invoice("U-2")).catch(() => undefined);
    expect(up.calls).toHaveLength(2);
  });
});

/** Prometheus text exposition: the value of one sample, by name and labels. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

describe("readiness", () => {
  it("reports the upstream unreachable (503) while nothing listens there, and ready once it does", async () => {
    const { gw, up } = await setup();
    const ready = await admin(gw, "/readyz", undefined, null);
    expect(ready.status).toBe(200);
    expect(ready.json()).toMatchObject({
      status: "ready",
      store: { reachable: true },
      upstream: { reachable: true },
    });
    await up.close();
    upstream = undefined;
    const down = await admin(gw, "/readyz", undefined, null);
    expect(down.status).toBe(503);
    expect(down.json()).toMatchObject({
      status: "upstream unreachable",
      upstream: { reachable: false, error: "ECONNREFUSED" },
    });
    expect(up.calls).toHaveLength(0);
  });
});

describe("attempt log", () => {
  it("records every protected request, lists them with filters, and counts them on the key", async () => {
    const { gw } = await setup();
    await send(`${gw.url}/invoices`, invoice("A-1"));
    await send(`${gw.url}/invoices`, invoice("A-1"));
    await send(`${gw.url}/invoices`, invoice("A-1", 5)); // mismatch
    await send(`${gw.url}/invoices`, invoice("A-2"));
    await gw.flushAttempts();
    const all = (await admin(gw, "/attempts")).json().attempts as Record<string, unknown>[];
    expect(all.map((a) => a.outcome)).toEqual(["executed", "mismatch", "replayed", "executed"]);
    expect(all[3]).toMatchObject({
      route: "create-invoice",
      status: 200,
      material: '{"key":["A-1","T-1"],"scope":["acme"]}',
    });
    expect(all[3]?.payload).toBeUndefined();
    expect(typeof all[3]?.upstreamMs).toBe("number");
    const replays = (await admin(gw, "/attempts?outcome=replayed&route=create-invoice")).json().attempts;
    expect(replays).toHaveLength(1);
    const looked = (await admin(gw, "/keys/lookup", ref("A-1"))).json();
    expect(looked.attempts).toBe(3);
    expect((looked.recentAttempts as unknown[]).length).toBe(3);
    expect((await admin(gw, "/attempts?limit=0")).status).toBe(400);
  });

  it("keeps request bodies only with audit.payloads: true", async () => {
    const { gw } = await setup(undefined, { audit: { payloads: true } });
    await send(`${gw.url}/invoices`, invoice("A-3"));
    await gw.flushAttempts();
    const [entry] = (await admin(gw, "/attempts")).json().attempts as Record<string, unknown>[];
    expect(entry?.payload).toBe(invoice("A-3").body);
  });
});

describe("metrics", () => {
  it("count requests by route and outcome after a known sequence, and time the upstream and the store", async () => {
    const { gw } = await setup();
    await send(`${gw.url}/invoices`, invoice("M-1")); // executed
    await send(`${gw.url}/invoices`, invoice("M-1")); // replayed
    await send(`${gw.url}/invoices`, invoice("M-1")); // replayed
    await send(`${gw.url}/invoices`, invoice("M-1", 99)); // mismatch (422)
    await send(`${gw.url}/invoices`, { headers: { "x-tenant-id": "acme" }, body: "{}" }); // rejected (400)
    const text = (await admin(gw, "/metrics")).body.toString();
    const requests = (outcome: string) =>
      sample(text, "idempotency_gateway_requests_total", { route: "create-invoice", outcome });
    expect(requests("executed")).toBe(1);
    expect(requests("replayed")).toBe(2);
    expect(requests("mismatch")).toBe(1);
    expect(requests("rejected")).toBe(1);
    expect(
      sample(text, "idempotency_gateway_upstream_duration_seconds_count", { route: "create-invoice" }),
    ).toBe(1);
    expect(sample(text, "idempotency_gateway_overhead_seconds_count", { route: "create-invoice" })).toBe(5);
    // One begin per request answers the read too: there is no separate get.
    expect(sample(text, "idempotency_gateway_store_duration_seconds_count", { op: "begin" })).toBe(4);
    expect(sample(text, "idempotency_gateway_store_duration_seconds_count", { op: "get" })).toBeUndefined();
    expect(sample(text, "idempotency_gateway_store_duration_seconds_count", { op: "complete" })).toBe(1);
    expect(sample(text, "idempotency_gateway_attempts_in_flight")).toBe(0);
    expect(sample(text, "idempotency_gateway_waiting_duplicates")).toBe(0);
    expect(sample(text, "idempotency_gateway_process_resident_memory_bytes")).toBeGreaterThan(0);
  });
});

describe("logs", () => {
  it("write one JSON line per protected request with its outcome, and pass request ids upstream", async () => {
    const { up, gw, lines } = await setup();
    await send(`${gw.url}/invoices`, {
      ...invoice("L-1"),
      headers: { ...invoice("L-1").headers, "x-request-id": "rid-given" },
    });
    await send(`${gw.url}/invoices`, invoice("L-1"));
    await send(`${gw.url}/health`, { method: "GET" });
    const requests = lines.filter((l) => l.msg === "protected request");
    expect(requests).toHaveLength(2);
    expect(requests[0]).toMatchObject({
      requestId: "rid-given",
      route: "create-invoice",
      outcome: "executed",
      status: 200,
    });
    expect(requests[1]).toMatchObject({ route: "create-invoice", outcome: "replayed", status: 200 });
    expect(String(requests[1]?.requestId)).toMatch(/^[0-9a-f-]{36}$/);
    expect(requests[0]?.key).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(JSON.stringify(requests)).not.toContain("L-1"); // key material and payloads stay out of logs
    expect(up.calls[0]?.headers["x-request-id"]).toBe("rid-given");
    expect(up.calls[1]?.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("leave the line per request out with log.access: false, and still count the requests", async () => {
    const { gw, lines } = await setup(undefined, { log: { access: false } });
    await send(`${gw.url}/invoices`, invoice("A-1"));
    await send(`${gw.url}/invoices`, invoice("A-1"));
    expect(lines.filter((l) => l.msg === "protected request")).toEqual([]);
    const text = (await admin(gw, "/metrics")).body.toString();
    expect(
      sample(text, "idempotency_gateway_requests_total", { route: "create-invoice", outcome: "replayed" }),
    ).toBe(1);
  });
});
