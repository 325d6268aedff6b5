import { describe, expect, it } from "vitest";
import { parseConfig, RouteTable } from "../../../src/config/index.js";
import { InvalidBodyError, MissingKeyError } from "../../../src/errors.js";
import { canonicalJson, deriveKey, RequestFields, type RequestView } from "../../../src/idempotency/index.js";

function route(r: Record<string, unknown>) {
  const table = new RouteTable(
    parseConfig({
      upstream: { url: "http://127.0.0.1:1" },
      routes: [{ name: "r", match: { path: "/x" }, ...r }],
    }),
  );
  return table.routes[0] as NonNullable<(typeof table.routes)[0]>;
}

function req(over: Partial<RequestView> & { headers?: Record<string, string> } = {}): RequestFields {
  const headers = over.headers ?? {};
  return new RequestFields({
    method: "POST",
    path: "/x",
    rawQuery: "",
    params: {},
    body: Buffer.alloc(0),
    header: (name) => headers[name],
    ...over,
  });
}

const json = (v: unknown) => Buffer.from(JSON.stringify(v));

describe("canonical encoding", () => {
  it("ignores object key order and keeps JSON types", () => {
    expect(canonicalJson({ b: 1, a: [{ d: 1, c: 2 }] })).toBe(canonicalJson({ a: [{ c: 2, d: 1 }], b: 1 }));
    expect(canonicalJson([42])).not.toBe(canonicalJson(["42"]));
  });
});

describe("key derivation", () => {
  const invoice = route({ key: { from: ["body:/invoiceNumber", "body:/transactionId"] } });

  it("derives the same key from the same business fields, whatever else changes", () => {
    const a = deriveKey(invoice, req({ body: json({ invoiceNumber: "A1", transactionId: 7, ts: 1 }) }));
    const b = deriveKey(invoice, req({ body: json({ ts: 2, transactionId: 7, invoiceNumber: "A1" }) }));
    expect(a?.storeKey).toBe(b?.storeKey);
    expect(a?.kind).toBe("derived");
    expect(a?.material).toEqual(["A1", 7]);
  });

  it('keeps JSON types apart: 7 and "7" are different keys', () => {
    const a = deriveKey(invoice, req({ body: json({ invoiceNumber: "A1", transactionId: 7 }) }));
    const b = deriveKey(invoice, req({ body: json({ invoiceNumber: "A1", transactionId: "7" }) }));
    expect(a?.storeKey).not.toBe(b?.storeKey);
  });

  it("on a route with key.from, ignores the header unless the route names it", () => {
    const body = json({ invoiceNumber: "A1", transactionId: 1 });
    const k = deriveKey(invoice, req({ headers: { "idempotency-key": "k1" }, body }));
    expect(k).toMatchObject({ kind: "derived", material: ["A1", 1] });
    const optIn = route({
      key: { header: "Idempotency-Key", from: ["body:/invoiceNumber", "body:/transactionId"] },
    });
    const h = deriveKey(optIn, req({ headers: { "idempotency-key": "k1" }, body: Buffer.from("not json") }));
    expect(h).toMatchObject({ kind: "header", material: ["k1"] });
  });

  it("ignores the header when key.header is false", () => {
    const r = route({ key: { header: false, from: ["path:robot"] } });
    const k = deriveKey(r, req({ headers: { "idempotency-key": "k1" }, params: { robot: "r7" } }));
    expect(k).toMatchObject({ kind: "derived", material: ["r7"] });
  });

  it.each([
    [{ invoiceNumber: "A1" }, "body:/transactionId is missing"],
    [{ invoiceNumber: "", transactionId: 1 }, "body:/invoiceNumber is missing"],
    [{ invoiceNumber: null, transactionId: 1 }, "body:/invoiceNumber is missing"],
  ])("names the missing field (%j)", (body, message) => {
    expect(() => deriveKey(invoice, req({ body: json(body) }))).toThrow(MissingKeyError);
    expect(() => deriveKey(invoice, req({ body: json(body) }))).toThrow(message);
  });

  it("names the JSON parse error of a body it needs", () => {
    expect(() => deriveKey(invoice, req({ body: Buffer.from("{nope") }))).toThrow(InvalidBodyError);
  });

  it("needs the header when required and nothing else is configured", () => {
    expect(() => deriveKey(route({ key: { required: true } }), req())).toThrow(
      "header:Idempotency-Key is missing",
    );
  });

  it("lets a request without a key through when the key is optional", () => {
    expect(deriveKey(route({}), req())).toBeUndefined();
  });

  it("partitions keys by scope", () => {
    const r = route({ scope: ["header:X-Tenant-Id"] });
    const a = deriveKey(r, req({ headers: { "idempotency-key": "k", "x-tenant-id": "t1" } }));
    const b = deriveKey(r, req({ headers: { "idempotency-key": "k", "x-tenant-id": "t2" } }));
    expect(a?.storeKey).not.toBe(b?.storeKey);
    expect(() => deriveKey(r, req({ headers: { "idempotency-key": "k" } }))).toThrow(
      "header:X-Tenant-Id is missing",
    );
  });

  it("fingerprints only the listed parts", () => {
    const r = route({ key: { from: ["body:/id"] }, fingerprint: ["body:/amount"] });
    const a = deriveKey(r, req({ body: json({ id: 1, amount: 10, ts: 1 }) }));
    const b = deriveKey(r, req({ body: json({ id: 1, amount: 10, ts: 2 }) }));
    const c = deriveKey(r, req({ body: json({ id: 1, amount: 11, ts: 1 }) }));
    expect(a?.fingerprint).toBe(b?.fingerprint);
    expect(a?.fingerprint).not.toBe(c?.fingerprint);
  });

  it("never puts the raw client string in the store key", () => {
    const k = deriveKey(route({}), req({ headers: { "idempotency-key": "secret-key-material" } }));
    expect(k?.storeKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(k?.storeKey).not.toContain("secret");
  });

  it("reads query parameters", () => {
    const r = route({ key: { from: ["query:txn"] } });
    expect(deriveKey(r, req({ rawQuery: "a=1&txn=T%2F9" }))?.material).toEqual(["T/9"]);
    expect(() => deriveKey(r, req({ rawQuery: "a=1" }))).toThrow("query:txn is missing");
  });

  it("reads urlencoded form fields", () => {
    const r = route({ key: { from: ["form:robot", "form:job"] } });
    const k = deriveKey(r, req({ body: Buffer.from("robot=r%201&job=42&ts=1") }));
    expect(k?.material).toEqual(["r 1", "42"]);
    expect(() => deriveKey(r, req({ body: Buffer.from("robot=r1") }))).toThrow("form:job is missing");
  });

  it("reads path params and headers", () => {
    const r = route({ key: { header: false, from: ["path:robot", "header:X-Message-Id"] } });
    const k = deriveKey(r, req({ params: { robot: "r7" }, headers: { "x-message-id": "m-1" } }));
    expect(k?.material).toEqual(["r7", "m-1"]);
  });

  it.each([
    ["body:/a~1b", { "a/b": 1 }, 1],
    ["body:/m~0n", { "m~n": 2 }, 2],
    ["body:/~01", { "~1": 3 }, 3],
    ["body:/items/1/id", { items: [{ id: "x" }, { id: "y" }] }, "y"],
    ["body:/", { "": "empty key" }, "empty key"],
    ["body:/nested/deep", { nested: { deep: { z: 1, a: 2 } } }, { a: 2, z: 1 }],
  ])("resolves the JSON pointer %s (RFC 6901)", (source, body, value) => {
    expect(deriveKey(route({ key: { from: [source] } }), req({ body: json(body) }))?.material).toEqual([
      value,
    ]);
  });

  it.each([
    ["body:/items/01", { items: ["a", "b"] }],
    ["body:/items/-", { items: ["a"] }],
    ["body:/items/5", { items: ["a"] }],
    ["body:/a/b", { a: "scalar" }],
    ["body:/toString", {}],
  ])("treats %s as missing when the pointer does not resolve", (source, body) => {
    expect(() => deriveKey(route({ key: { from: [source] } }), req({ body: json(body) }))).toThrow(
      MissingKeyError,
    );
  });

  it("lets an object-valued key field match whatever its key order", () => {
    const r = route({ key: { from: ["body:/ref"] } });
    const a = deriveKey(r, req({ body: Buffer.from('{"ref":{"a":1,"b":2}}') }));
    const b = deriveKey(r, req({ body: Buffer.from('{"ref":{"b":2,"a":1}}') }));
    expect(a?.storeKey).toBe(b?.storeKey);
  });

  it("keeps routes apart: the same key material on two routes is two keys", () => {
    const table = new RouteTable(
      parseConfig({
        upstream: { url: "http://127.0.0.1:1" },
        routes: [
          { name: "a", match: { path: "/a" } },
          { name: "b", match: { path: "/b" } },
        ],
      }),
    );
    const [a, b] = table.routes as [(typeof table.routes)[0], (typeof table.routes)[0]];
    const h = { headers: { "idempotency-key": "same" } };
    expect(deriveKey(a, req(h))?.storeKey).not.toBe(deriveKey(b, req(h))?.storeKey);
  });
});
